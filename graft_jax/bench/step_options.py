"""Before/after measurements of the train step's speed choices (issue 7, item 3).

  results = run_option_bench(llm_config, target_llm, vit, BatchShape(), plan=plan)

Each comparison builds one stage's step with the library's own `make_train_step`
(graft_jax/bench/jax_stages.py) in two or three variants that differ in one choice, on the same
synthetic batch, compiles each ahead of time (`jit(...).lower(...).compile()`: compile seconds and
the executable's `memory_analysis()`), and times them round-robin, one step of each in turn, so a
drifting load on shared cores hits them alike. The first variant of each is what graft_jax does.

  head_logits   LM head + cross-entropy at the supervised positions only | at every position
  attention     jax.nn.dot_product_attention | hand-written einsum + softmax (GQA by repeat)
  frozen_dtype  fp32 | frozen weights stored in bf16, fp32 compute | bf16 compute
  donation      the state donated to the step | not donated (stage 2; donation_stage3: stage 3)
  remat_stage2  no rematerialisation | dots_no_batch | full (stage 2 on the surrogate)
  remat_stage3  the same, stage 3 (whole decoder trains) on the full target
  metrics_fetch a loop of `loop_steps` steps: metrics kept on the device and fetched at the end
                (what train/metrics.py's logger does) | `float(loss)` after every step

XLA memory = arguments + outputs - aliased (donated) + temporaries of the compiled step, a
deterministic per-variant number (host RSS can't separate variants living in one process).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import statistics
import time
from typing import Any, Callable, Sequence
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.bench.batch import BatchShape, synthetic_batch
from graft_jax.bench.jax_stages import get_bench_stage, prepare_stage
from graft_jax.bench.measure import round_robin
from graft_jax.models import block as block_module
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.train.model_setup import init_encoder_side
from graft_jax.train.optimizer import make_optimizer
from graft_jax.train.step import supervised_cap


@dataclasses.dataclass(frozen=True)
class Variant:
  """One way of building the step. llm: LlamaConfig fields to override (dtype, remat_policy);
  frozen_dtype: cast the frozen params (storage); head: "supervised" or "all" positions;
  attention: "library" or "einsum"; fetch: "async" or "sync" (metrics_fetch only)."""
  label: str
  llm: tuple[tuple[str, Any], ...] = ()
  frozen_dtype: Any = None
  donate: bool = True
  head: str = "supervised"
  attention: str = "library"
  fetch: str = "async"


@dataclasses.dataclass(frozen=True)
class Comparison:
  name: str
  stage: str
  variants: tuple[Variant, ...]
  question: str


NOW = Variant("graft_jax (now)")
COMPARISONS: dict[str, Comparison] = {c.name: c for c in (
    Comparison("head_logits", "stage2_surrogate", (NOW, Variant("logits at every position", head="all")),
               "LM head only where there is a target"),
    Comparison("attention", "stage2_surrogate", (NOW, Variant("einsum + softmax attention", attention="einsum")),
               "jax.nn.dot_product_attention vs hand-written attention"),
    Comparison("frozen_dtype", "stage2_surrogate",
               (NOW, Variant("frozen weights stored in bf16", frozen_dtype=jnp.bfloat16),
                Variant("bf16 compute, frozen bf16", llm=(("dtype", "bfloat16"),), frozen_dtype=jnp.bfloat16)),
               "frozen weights in bf16"),
    Comparison("donation", "stage2_surrogate", (NOW, Variant("state not donated", donate=False)),
               "donated state buffers"),
    Comparison("donation_stage3", "stage3_full", (NOW, Variant("state not donated", donate=False)),
               "donated state buffers, stage 3 (136.7M trainable)"),
    Comparison("remat_stage2", "stage2_surrogate",
               (NOW, Variant("remat dots_no_batch", llm=(("remat_policy", "dots_no_batch"),)),
                Variant("remat full", llm=(("remat_policy", "full"),))), "rematerialisation policy, stage 2"),
    Comparison("remat_stage3", "stage3_full",
               (NOW, Variant("remat dots_no_batch", llm=(("remat_policy", "dots_no_batch"),)),
                Variant("remat full", llm=(("remat_policy", "full"),))), "rematerialisation policy, stage 3"),
    Comparison("metrics_fetch", "stage2_surrogate", (NOW, Variant("float(loss) after every step", fetch="sync")),
               "metrics fetched without a host round trip per step"),
)}


def einsum_attend(q, k, v, mask, impl: str = "xla"):
  """The 'before' attention: q float[B, T, H, hd], k/v float[B, S, K, hd] -> float[B, T, H, hd],
  scores in float32 with a dense mask (causal if mask is None), K heads repeated to H."""
  del impl
  heads, kv_heads = q.shape[2], k.shape[2]
  k, v = (jnp.repeat(x, heads // kv_heads, axis=2) for x in (k, v))
  scores = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32) * q.shape[-1] ** -0.5
  if mask is None:
    mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))[None, None]
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)


def _attention(kind: str):
  if kind == "library":
    return contextlib.nullcontext()
  if kind == "einsum":
    return mock.patch.object(block_module, "attend", einsum_attend)
  raise ValueError(f"Unknown attention variant {kind!r}")


class VariantRunner:
  """A variant's step compiled ahead of time; calling it runs `steps` steps (the state is donated
  or replaced each call) and blocks until they are done."""

  def __init__(self, variant: Variant, prepared, model: VLM, loop_steps: int = 1):
    if variant.head not in ("supervised", "all") or variant.fetch not in ("async", "sync"):
      raise ValueError(f"Bad variant {variant}")
    self.variant, self.prepared, self.loop_steps = variant, prepared, loop_steps
    batch = prepared.batch
    if variant.head == "all":  # every decoder position but the last predicts a token
      image_len = 0 if prepared.stage.decoder_only else model.image_len
      cap = batch["tokens"].shape[1] + image_len - 1
    else:
      cap = supervised_cap(batch)
    jitted = prepared.step.jitted_for(cap)
    with _attention(variant.attention):
      start = time.perf_counter()
      self.compiled = jitted.lower(prepared.state, prepared.frozen, batch, None).compile()
      self.compile_s = time.perf_counter() - start
    mem = self.compiled.memory_analysis()
    self.memory = {"argument": mem.argument_size_in_bytes, "output": mem.output_size_in_bytes,
                   "alias": mem.alias_size_in_bytes, "temp": mem.temp_size_in_bytes}
    self.memory["total"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                            + mem.temp_size_in_bytes)
    self.state, self.losses = prepared.state, []
    prepared.state = None

  def __call__(self) -> None:
    p, pending = self.prepared, []
    for _ in range(self.loop_steps):
      self.state, metrics = self.compiled(self.state, p.frozen, p.batch, None)
      if self.variant.fetch == "sync":
        self.losses.append(float(metrics["loss"]))
      else:
        pending.append(metrics["loss"])
    jax.block_until_ready(self.state)
    self.losses.extend(float(x) for x in pending)

  def release(self) -> None:
    self.state = self.compiled = None
    self.prepared.frozen = self.prepared.batch = None
    gc.collect()


def paired_ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
  """Per variant, the median over rounds of its time / the base variant's time in that round."""
  return {name: statistics.median(x / y for x, y in zip(t, times[base])) for name, t in times.items()}


def run_comparison(comparison: Comparison, build: Callable[[Variant], VariantRunner], *, warmup: int, steps: int,
                   log: Callable[[str], None] = print) -> dict:
  """Builds every variant, times them round-robin, returns a JSON-able record."""
  runners = {}
  for v in comparison.variants:
    log(f"  {comparison.name}: compiling '{v.label}' ...")
    runners[v.label] = build(v)
  times = round_robin(runners, warmup, steps)
  ratios = paired_ratios(times, comparison.variants[0].label)
  out = {"stage": comparison.stage, "question": comparison.question, "variants": {}}
  for label, r in runners.items():
    out["variants"][label] = {
        "step_s": statistics.median(times[label]) / r.loop_steps, "times_s": times[label],
        "time_vs_now": ratios[label], "compile_s": r.compile_s, "xla_memory_bytes": r.memory,
        "first_loss": r.losses[0], "steps_per_call": r.loop_steps}
    r.release()
  return out


def run_option_bench(llm_config: LlamaConfig, target_llm: dict, vit: VitConfig, shape: BatchShape, *,
                     plan: SurrogatePlan, comparisons: Sequence[str] = tuple(COMPARISONS), warmup: int = 1,
                     steps: int = 5, loop_steps: int = 4, lr: float = 1e-4, seed: int = 0,
                     log: Callable[[str], None] = print) -> dict:
  """Runs the named comparisons on one synthetic batch (as bench_train's); returns
  {"settings", "comparisons": {name: record}}."""
  unknown = [c for c in comparisons if c not in COMPARISONS]
  if unknown:
    raise ValueError(f"Unknown comparisons {unknown}; choose from {list(COMPARISONS)}")
  image_len = VLM(vit, llm_config).image_len
  batch = synthetic_batch(shape, llm_config.vocab_size, vit.image_size, image_len, seed=seed)
  encoder = jax.tree.map(np.asarray, init_encoder_side(VLM(vit, llm_config), seed))
  surrogate_llm = make_surrogate(target_llm, plan)
  optimizer = make_optimizer(lr)
  out = {"settings": {"batch": shape.batch, "text_len": shape.text_len, "supervised_per_row": shape.supervised,
                      "image_len": image_len, "seq_len": shape.seq_len(image_len), "plan": plan.describe(),
                      "warmup": warmup, "steps": steps, "loop_steps": loop_steps, "lr": lr},
         "comparisons": {}}
  for name in comparisons:
    comparison = COMPARISONS[name]
    stage = get_bench_stage(comparison.stage)

    def build(v: Variant, stage=stage, name=name) -> VariantRunner:
      config = dataclasses.replace(llm_config, **dict(v.llm))
      model = VLM(vit, config, plan.segments if stage.on_surrogate else None)
      params = {**encoder, "llm": surrogate_llm if stage.on_surrogate else target_llm}
      prepared = prepare_stage(stage, model, params, batch, optimizer, frozen_dtype=v.frozen_dtype,
                               donate_state=v.donate)
      return VariantRunner(v, prepared, model, loop_steps if name == "metrics_fetch" else 1)

    log(f"{name} ({comparison.question}; {stage.label})")
    out["comparisons"][name] = record = run_comparison(comparison, build, warmup=warmup, steps=steps, log=log)
    for label, r in record["variants"].items():
      log(f"    {label}: {r['step_s']:.3f} s/step (x{r['time_vs_now']:.3f}), compile {r['compile_s']:.1f} s, "
          f"XLA memory {r['xla_memory_bytes']['total'] / 2**30:.2f} GiB, first loss {r['first_loss']:.6f}")
  return out


def option_table(results: dict) -> str:
  """Markdown: one row per variant of each comparison."""
  rows = ["| comparison | variant | step time (median) | time vs graft_jax | compile | XLA memory (temp) | first loss |",
          "|---|---|---|---|---|---|---|"]
  for name, record in results["comparisons"].items():
    for label, r in record["variants"].items():
      mem = r["xla_memory_bytes"]
      rows.append(f"| {name} ({record['stage']}) | {label} | {r['step_s']:.3f} s | x{r['time_vs_now']:.3f} | "
                  f"{r['compile_s']:.1f} s | {mem['total'] / 2**30:.2f} GiB ({mem['temp'] / 2**30:.2f}) | "
                  f"{r['first_loss']:.5f} |")
  return "\n".join(rows)
