"""Each training stage's step on a synthetic batch: built with the library's own train step
(graft_jax/train/step.py, make_train_step) and timed.

  stage = BENCH_STAGES["stage2_surrogate"]
  prepared = prepare_stage(stage, model, params, batch, optimizer)   # params of `model`'s layout
  result = run_stage(prepared, warmup=1, steps=5, peak_flops=1e11)  # or StageRunner(prepared)
                                                                     # timed with other runs

The stages (trainable rules from graft_jax/train/stages.py):
  translator        surrogate, text only, the translator trains (stage 0)
  stage2_surrogate  surrogate + encoder: adapter, soi/eoi, encoder's last 8 layers + post-LN
  stage2_full       the same on the full target (the "encoder trained directly" control)
  stage3_full       full target: the whole decoder plus the stage-2 set
"""
from __future__ import annotations

import dataclasses
import gc
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from graft_jax.bench.flops import StepFlops, mfu, train_step_flops
from graft_jax.bench.measure import PeakMemory, first_call, round_robin, timing
from graft_jax.models.vlm import VLM
from graft_jax.train import sharding
from graft_jax.train.layout import make_layout
from graft_jax.train.partition import split
from graft_jax.train.stages import STAGES
from graft_jax.train.step import make_train_step


@dataclasses.dataclass(frozen=True)
class BenchStage:
  name: str
  on_surrogate: bool
  decoder_only: bool
  trainable: tuple[str, ...]
  label: str


BENCH_STAGES: dict[str, BenchStage] = {
    "translator": BenchStage("translator", True, True, STAGES["translator"].trainable,
                             "translator (stage 0, text) on the surrogate"),
    "stage2_surrogate": BenchStage("stage2_surrogate", True, False, STAGES["finetune_encoder"].trainable,
                                   "stage 2 on the surrogate"),
    "stage2_full": BenchStage("stage2_full", False, False, STAGES["finetune_encoder"].trainable,
                              "stage 2 on the full target"),
    "stage3_full": BenchStage("stage3_full", False, False, STAGES["finetune_decoder"].trainable,
                              "stage 3 (whole decoder) on the full target"),
}


def get_bench_stage(name: str) -> BenchStage:
  if name not in BENCH_STAGES:
    raise ValueError(f"Unknown benchmark stage {name!r}; choose from {list(BENCH_STAGES)}")
  return BENCH_STAGES[name]


@dataclasses.dataclass
class PreparedStage:
  """A compiled-on-first-call step with its placed state, frozen params and batch."""
  stage: BenchStage
  step: Callable
  state: Any
  frozen: Any
  batch: dict
  flops: StepFlops
  trainable_params: int
  frozen_params: int


def _cast_floats(tree, dtype):
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def prepare_stage(stage: BenchStage, model: VLM, params: dict, batch: dict,
                  optimizer: optax.GradientTransformation, *, frozen_dtype=None, device=None,
                  pad_id: int = 0, donate_state: bool = True) -> PreparedStage:
  """Splits `params` ({"llm"} for text-only stages, else {"img", "proj", "llm"}; the decoder in
  `model.segments`' layout) by the stage's rules, places everything on one device, and makes the
  library's train step. frozen_dtype: cast the frozen floating params (e.g. jnp.bfloat16);
  trainable ones stay in their dtype (fp32 master copies). donate_state: as in make_train_step."""
  device = device or jax.devices()[0]
  mesh = sharding.make_mesh(sharding.DEFAULT_MESH, [device])
  spec = stage.trainable
  layout = make_layout(mesh, params, spec, optimizer)
  trainable, frozen = split(params, spec)
  if frozen_dtype is not None:
    frozen = _cast_floats(frozen, frozen_dtype)
  n_trainable, n_frozen = _count(trainable), _count(frozen)
  state = layout.create_state(jax.device_put(trainable, layout.state.trainable), optimizer)
  frozen = jax.device_put(frozen, layout.frozen)
  del trainable
  step = make_train_step(model, layout, optimizer, decoder_only=stage.decoder_only, pad_id=pad_id,
                         donate_state=donate_state)
  placed = {k: jax.device_put(v, layout.batch) for k, v in batch.items() if k != "has_image"}
  placed["has_image"] = np.asarray(batch["has_image"])  # host copy: the step checks it
  image_len = 0 if stage.decoder_only else model.image_len
  seq_len = batch["tokens"].shape[1] + image_len
  supervised = int((batch["loss_mask"][:, 1:] & batch["valid"][:, 1:]).sum())
  flops = train_step_flops(params, spec, model.llm, segments=model.segments,
                           vit=None if stage.decoder_only else model.vit, batch=batch["tokens"].shape[0],
                           seq_len=seq_len, images=0 if stage.decoder_only else int(batch["has_image"].sum()),
                           head_tokens=supervised)
  return PreparedStage(stage, step, state, frozen, placed, flops, n_trainable, n_frozen)


class StageRunner:
  """Calling it runs one step of a prepared stage and blocks until it is done (the state is
  donated and replaced each call); `result` turns timings into the stage's JSON-able record."""

  def __init__(self, prepared: PreparedStage):
    self.prepared, self.state, self.losses = prepared, prepared.state, []
    prepared.state = None

  def __call__(self) -> None:
    p = self.prepared
    self.state, metrics = p.step(self.state, p.frozen, p.batch)
    jax.block_until_ready((self.state, metrics))
    self.losses.append(float(metrics["loss"]))

  def result(self, first_call_s: float, times: list[float], memory: PeakMemory,
             peak_flops: float | None = None, compile_s: float | None = None) -> dict:
    p, t = self.prepared, timing(first_call_s, times, compile_s)
    out = {"stage": p.stage.name, "label": p.stage.label, "trainable_params": p.trainable_params,
           "frozen_params": p.frozen_params, "decoder_tokens_per_step": p.flops.decoder_tokens,
           "step_s": t.step_s, "step_times_s": list(t.times_s), "first_call_s": t.first_call_s,
           "compile_s": t.compile_s, "tokens_per_s": p.flops.decoder_tokens / t.step_s,
           "step_flops": p.flops.total, "flops_parts": p.flops.parts, "first_loss": self.losses[0],
           "last_loss": self.losses[-1], **memory.as_dict()}
    if peak_flops:
      out["peak_flops"] = peak_flops
      out["mfu"] = mfu(p.flops.total, t.step_s, peak_flops)
    return out

  def release(self) -> None:
    self.state = None
    self.prepared.frozen = self.prepared.batch = None
    gc.collect()


def run_stage(prepared: PreparedStage, *, warmup: int = 1, steps: int = 5,
              peak_flops: float | None = None) -> dict:
  """Times the stage's step (first call = compilation + a run; then `warmup` untimed and `steps`
  timed calls) with host/device peak memory over all of them; returns a JSON-able dict. The
  prepared state is consumed (donated) and released."""
  runner = StageRunner(prepared)
  with PeakMemory() as memory:
    first, compile_s = first_call(runner)
    times = round_robin({"step": runner}, warmup, steps)["step"]
  result = runner.result(first, times, memory, peak_flops, compile_s)
  runner.release()
  return result
