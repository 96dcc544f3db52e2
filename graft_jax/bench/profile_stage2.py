"""Profiles graft_jax's stage-2 step on the surrogate and the PyTorch reference's on the same batch
(experiments/profile_stage2.py): wall time per step, then each step's op times by category."""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from graft_jax.bench.batch import BatchShape, synthetic_batch
from graft_jax.bench.jax_stages import StageRunner, get_bench_stage, prepare_stage
from graft_jax.bench.measure import first_call, round_robin
from graft_jax.bench.profile import by_category, jax_op_times, top_ops, torch_op_times
from graft_jax.bench.train_bench import TorchRunner
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.train.optimizer import make_optimizer


def profile_stage2(llm_config: LlamaConfig, target_llm: dict, reference_llm, vit: VitConfig, shape: BatchShape, *,
                   plan: SurrogatePlan, trace_dir: str, timed_steps: int = 3, profiled_steps: int = 2,
                   lr: float = 1e-4, seed: int = 0, log: Callable[[str], None] = print) -> dict:
  """Both steps compiled/warmed, timed round-robin (2 rounds; a turn is 1 untimed + `timed_steps`
  timed steps; the reference runs in this process, as torch.profiler needs), then profiled
  (`profiled_steps` each). Returns a JSON-able dict: per framework "step_s" (median), "ops"
  (seconds per step per op), "categories", "top", the matmul FLOP rates and "profiled_step_s"
  (median wall time of a step under the profiler, which slows torch's many small ops most)."""
  image_len = VLM(vit, llm_config).image_len
  batch = synthetic_batch(shape, llm_config.vocab_size, vit.image_size, image_len, seed=seed)
  log("PyTorch reference: first step ...")
  reference = TorchRunner(reference_llm, vit, plan, batch, image_len, lr=lr, seed=seed)
  first_call(reference)
  log("graft_jax: compile + first step ...")
  model = VLM(vit, llm_config, plan.segments)
  params = {**reference.encoder, "llm": make_surrogate(target_llm, plan)}
  prepared = prepare_stage(get_bench_stage("stage2_surrogate"), model, params, batch, make_optimizer(lr))
  flops = prepared.flops
  ours = StageRunner(prepared)
  first_call(ours)
  runners = {"graft_jax": ours, "reference": reference}
  log(f"timing: 2 rounds of turns of 1 untimed + {timed_steps} timed steps ...")
  times = round_robin(runners, 0, 2, turn_steps=timed_steps, turn_warmup=1)
  log(f"profiling {profiled_steps} steps each ...")
  profiled_s = {name: [] for name in runners}

  def timed(name):
    def run():
      start = time.perf_counter()
      runners[name]()
      profiled_s[name].append(time.perf_counter() - start)
    return run

  jax_ops = jax_op_times(timed("graft_jax"), steps=profiled_steps, trace_dir=os.path.join(trace_dir, "jax"))
  torch_ops = torch_op_times(timed("reference"), steps=profiled_steps)
  torch_seconds = {op: v["s"] for op, v in torch_ops.items()}
  out = {"settings": {"batch": shape.batch, "seq_len": shape.seq_len(image_len), "plan": plan.describe(),
                      "timed_steps": timed_steps, "profiled_steps": profiled_steps},
         "graft_jax": {"step_s": float(np.median(times["graft_jax"])), "ops": jax_ops,
                       "categories": by_category(jax_ops, "jax"), "top": top_ops(jax_ops, "jax"),
                       "model_flops": flops.total,
                       "profiled_step_s": float(np.median(profiled_s["graft_jax"]))},
         "reference": {"step_s": float(np.median(times["reference"])), "ops": torch_ops,
                       "categories": by_category(torch_seconds, "torch"), "top": top_ops(torch_seconds, "torch"),
                       "matmul_flops": sum(v["flops"] for v in torch_ops.values()),
                       "profiled_step_s": float(np.median(profiled_s["reference"]))}}
  out["graft_jax"]["matmul_gflops_per_s"] = flops.total / max(out["graft_jax"]["categories"]["matmul"], 1e-9) / 1e9
  out["reference"]["matmul_gflops_per_s"] = (out["reference"]["matmul_flops"]
                                             / max(out["reference"]["categories"]["matmul"], 1e-9) / 1e9)
  ours.release()
  reference.release()
  return out
