"""The CPU training-step benchmark behind experiments/bench_train.py, for any decoder size.

  results = run_train_bench(llm_config, target_llm, vit, BatchShape(), plan=plan,
                            stages=("translator", "stage2_surrogate", "stage2_full", "stage3_full"),
                            reference_llm=torch_llama, peak_flops=None)

Every stage runs the library's own step (graft_jax/bench/jax_stages.py) on the same synthetic
batch; `reference_llm` (a transformers LlamaForCausalLM holding the same weights as
`target_llm`) adds the PyTorch reference of stage 2 on the surrogate (and, with
reference_full, on the full target), whose encoder and adapter weights graft_jax then uses too,
so both start from the same loss. The reference runs in its own process by default
(graft_jax/bench/reference_process.py says why).

Timing: each run's first call (compilation + a step) is timed on its own, with the peak host RSS
during it and JAX's own report of its compilation time (jax.monitoring). The runs whose ratios the goals compare (stage 2 on the surrogate and on the full
target, and the reference runs: `INTERLEAVED`) are then timed round-robin, one step of each in
turn, so a drifting load on shared cores hits them alike; the other stages are timed right after
their first call (their peak RSS covers those steps too) and released before the next is built.
"""
from __future__ import annotations

import copy
import gc
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import jax
import numpy as np

from graft_jax.bench.batch import BatchShape, expanded_layout, synthetic_batch
from graft_jax.bench.flops import mfu
from graft_jax.bench.jax_stages import StageRunner, get_bench_stage, prepare_stage
from graft_jax.bench.measure import PeakMemory, first_call, matmul_peak_flops, round_robin, timing
from graft_jax.bench.reference_process import ReferenceProcess
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.train.model_setup import init_encoder_side
from graft_jax.train.optimizer import make_optimizer

DEFAULT_STAGES = ("translator", "stage2_surrogate", "stage2_full", "stage3_full")
INTERLEAVED = ("stage2_surrogate", "stage2_full")


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def machine_info() -> dict:
  """Platform, device, CPU model, core count and load average at the time of the run."""
  load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
  return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "platform": jax.devices()[0].platform,
          "device": str(jax.devices()[0].device_kind), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
          "load_average_1_5_15": [round(x, 2) for x in load], "python": platform.python_version(),
          "jax": jax.__version__}


class TorchRunner:
  """The PyTorch reference step as a runner: calling it runs one step (stage 2)."""

  def __init__(self, reference_llm, vit: VitConfig, plan: SurrogatePlan | None, batch: dict, image_len: int, *,
               lr: float, seed: int):
    from graft_jax.bench.torch_reference import TorchVLM  # pylint: disable=g-import-not-at-top
    self.name = "stage2_surrogate" if plan else "stage2_full"
    self.model = TorchVLM.build(vit, copy.deepcopy(reference_llm), plan=plan, seed=seed)
    self.encoder = self.model.jax_encoder_params()
    self.step = self.model.make_step(lr=lr)
    self.layout, self.images, self.losses = expanded_layout(batch, image_len), batch["images"], []

  def __call__(self) -> None:
    self.losses.append(self.step(self.layout, self.images))

  def result(self, first_call_s: float, times: list[float], memory: PeakMemory) -> dict:
    import torch  # pylint: disable=g-import-not-at-top
    t = timing(first_call_s, times)
    tokens = int(np.prod(self.layout["tokens"].shape))
    return {"stage": self.name, "label": "PyTorch reference", "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "trainable_params": int(sum(p.numel() for p in self.model.trainable_parameters())),
            "decoder_tokens_per_step": tokens, "step_s": t.step_s, "step_times_s": list(t.times_s),
            "first_call_s": t.first_call_s, "tokens_per_s": tokens / t.step_s,
            "first_loss": self.losses[0], "last_loss": self.losses[-1], "process": "shared with JAX",
            **memory.as_dict()}

  def release(self) -> None:
    self.model = self.step = None
    gc.collect()


def _first_call(runner) -> tuple[float, float | None, PeakMemory]:
  """(first call s, JAX compilation s during it, the peak memory during it)."""
  with PeakMemory() as memory:
    first, compile_s = first_call(runner)
  return first, compile_s, memory


def run_train_bench(llm_config: LlamaConfig, target_llm: dict, vit: VitConfig, shape: BatchShape, *,
                    plan: SurrogatePlan, stages: Sequence[str] = DEFAULT_STAGES, reference_llm=None,
                    reference_full: bool = False, warmup: int = 1, steps: int = 5, turn_steps: int = 1,
                    turn_warmup: int = 0,
                    peak_flops: float | None = None, lr: float = 1e-4, seed: int = 0,
                    torch_threads: int | None = None, reference_process: bool = True,
                    log: Callable[[str], None] = print) -> dict:
  """Runs the stages (and the reference) on one synthetic batch; returns a JSON-able dict:
  {"machine", "settings", "peak_flops", "stages": {name: result}, "reference": {...},
  "summary": ratios}. peak_flops None: measured with a matmul microbenchmark.
  reference_process: the reference runs in its own process (graft_jax/bench/reference_process.py,
  stepped round-robin from here); False runs it in this process, beside JAX."""
  for name in stages:
    get_bench_stage(name)
  image_len = VLM(vit, llm_config).image_len
  batch = synthetic_batch(shape, llm_config.vocab_size, vit.image_size, image_len, seed=seed)
  text_batch = synthetic_batch(shape, llm_config.vocab_size, vit.image_size, image_len, text_only=True, seed=seed)
  out = {"machine": machine_info(),
         "settings": {"batch": shape.batch, "text_len": shape.text_len, "supervised_per_row": shape.supervised,
                      "image_pos": shape.image_pos, "image_len": image_len, "seq_len": shape.seq_len(image_len),
                      "vit": {"image_size": vit.image_size, "patch_size": vit.patch_size, "width": vit.width,
                              "depth": vit.depth},
                      "plan": plan.describe(), "warmup": warmup, "steps": steps, "turn_steps": turn_steps,
                      "turn_warmup": turn_warmup, "lr": lr,
                      "dtype": llm_config.dtype, "param_dtype": llm_config.param_dtype,
                      "interleaved": [*INTERLEAVED, "reference"],
                      "reference_process": "own" if reference_process else "shared with JAX"},
         "stages": {}, "reference": {}}
  measure_peak = peak_flops is None
  if measure_peak:
    log("measuring peak FLOP/s (matmul microbenchmark) ...")
    peak_flops = out["peak_flops_at_start"] = matmul_peak_flops()
    out["peak_flops_source"] = ("measured: best of 5 jitted fp32 2048x2048 matmuls, the higher of the "
                                "runs at the start and at the end")
  else:
    out["peak_flops_source"] = "given"
  log(f"peak {peak_flops / 1e9:.1f} GFLOP/s ({out['peak_flops_source']})")

  kept: dict[str, tuple] = {}  # key -> (runner, first call s, compile s, PeakMemory): round-robin at the end
  encoder = None
  if reference_llm is not None:
    if not reference_process:
      import torch  # pylint: disable=g-import-not-at-top
      if torch_threads:
        torch.set_num_threads(torch_threads)
    for ref_plan in ([plan, None] if reference_full else [plan]):
      if reference_process:
        runner = ReferenceProcess(reference_llm, vit, ref_plan, batch, image_len, lr=lr, seed=seed,
                                  torch_threads=torch_threads)
      else:
        runner = TorchRunner(reference_llm, vit, ref_plan, batch, image_len, lr=lr, seed=seed)
      log(f"PyTorch reference: {runner.name}, first step ...")
      kept[f"reference/{runner.name}"] = (runner, *_first_call(runner))
      encoder = encoder or runner.encoder
  if encoder is None:
    encoder = jax.tree.map(np.asarray, init_encoder_side(VLM(vit, llm_config), seed))

  optimizer = make_optimizer(lr)
  surrogate_llm = make_surrogate(target_llm, plan)
  for name in stages:
    stage = get_bench_stage(name)
    log(f"graft_jax: {stage.label}, compile + first step ...")
    segments = plan.segments if stage.on_surrogate else None
    llm = surrogate_llm if stage.on_surrogate else target_llm
    params = {"llm": llm} if stage.decoder_only else {**encoder, "llm": llm}
    runner = StageRunner(prepare_stage(stage, VLM(vit, llm_config, segments), params,
                                       text_batch if stage.decoder_only else batch, optimizer))
    if name in INTERLEAVED:
      kept[name] = (runner, *_first_call(runner))
      continue
    with PeakMemory() as memory:
      first, compile_s = first_call(runner)
      times = round_robin({name: runner}, warmup, steps, turn_steps=turn_steps, turn_warmup=turn_warmup)[name]
    out["stages"][name] = runner.result(first, times, memory, peak_flops, compile_s)
    runner.release()
    _log_stage(log, out["stages"][name])

  if kept:
    log(f"timing {', '.join(kept)} round-robin ({warmup} warm-up + {steps} timed rounds; each turn "
        f"{turn_warmup} untimed + {turn_steps} timed steps) ...")
    times = round_robin({key: r for key, (r, _, _, _) in kept.items()}, warmup, steps, turn_steps=turn_steps,
                        turn_warmup=turn_warmup)
    for key, (runner, first, compile_s, memory) in kept.items():
      if key.startswith("reference/"):
        out["reference"][runner.name] = runner.result(first, times[key], memory)
      else:
        out["stages"][key] = runner.result(first, times[key], memory, peak_flops, compile_s)
        _log_stage(log, out["stages"][key])
      runner.release()
    out["stages"] = {name: out["stages"][name] for name in stages}  # the requested order
  if measure_peak:  # a loaded moment understates the peak: take the better of two measurements
    out["peak_flops_at_end"] = matmul_peak_flops()
    peak_flops = max(out["peak_flops_at_start"], out["peak_flops_at_end"])
  out["peak_flops"] = peak_flops
  for r in out["stages"].values():
    r["peak_flops"], r["mfu"] = peak_flops, mfu(r["step_flops"], r["step_s"], peak_flops)
  out["summary"] = summarize(out)
  out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
  return out


def _log_stage(log, r: dict) -> None:
  log(f"  {r['stage']}: {r['step_s']:.3f} s/step, compile {r['compile_s']:.1f} s, "
      f"MFU {100 * r['mfu']:.1f}% (against the peak measured so far)")


def paired_ratio(a: dict, b: dict) -> float:
  """Step time of run a over run b: the median over rounds of a_i / b_i when both were timed
  round-robin (same number of rounds; each pair saw the same load), else the ratio of medians."""
  ta, tb = a.get("step_times_s", []), b.get("step_times_s", [])
  if ta and len(ta) == len(tb):
    return statistics.median(x / y for x, y in zip(ta, tb))
  return a["step_s"] / b["step_s"]


def summarize(results: dict) -> dict:
  """Ratios the goals are about: surrogate/full step time vs FLOPs (stage 2), and graft_jax over
  the PyTorch reference in tokens/s (per stage the reference ran); per-round paired ratios
  (`paired_ratio`) as the headline, the ratio of medians beside them."""
  stages, ref = results["stages"], results.get("reference", {})
  summary = {}
  if "stage2_surrogate" in stages and "stage2_full" in stages:
    s, f = stages["stage2_surrogate"], stages["stage2_full"]
    time_ratio, flops_ratio = paired_ratio(s, f), s["step_flops"] / f["step_flops"]
    summary.update(surrogate_full_time_ratio=time_ratio, surrogate_full_flops_ratio=flops_ratio,
                   time_vs_flops_ratio_deviation=time_ratio / flops_ratio - 1,
                   surrogate_full_time_ratio_of_medians=s["step_s"] / f["step_s"])
  for name, r in ref.items():
    if name in stages:
      j = stages[name]
      tokens = j["decoder_tokens_per_step"] / r["decoder_tokens_per_step"]
      summary[f"{name}_speedup_vs_reference"] = tokens / paired_ratio(j, r)
      summary[f"{name}_speedup_vs_reference_of_medians"] = j["tokens_per_s"] / r["tokens_per_s"]
      summary[f"{name}_first_loss_jax_vs_reference"] = [j["first_loss"], r["first_loss"]]
  return summary
