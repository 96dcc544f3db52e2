"""GPU check: stage 2 on the surrogate, stage 2 on the full target and stage 3 at real shapes with
random weights, on one GPU (run by experiments/gpu_check.sh; `--tiny` runs it on a CPU).

  python experiments/gpu_check.py --out $OUT/gpu_check.json            # Llama-3.2-3B + ViT-L/14-336
  python experiments/gpu_check.py --tiny --inprocess --out /tmp/g.json  # smoke run on a CPU

Shapes: a Llama-3.2-3B-shaped decoder (preset `llama-3.2-3b`) and its surrogate [16, 26]
(28 -> 18 layers), a CLIP ViT-L/14-336-shaped encoder (577 tokens, 579 image embeddings), rows of
525 text + 579 image = 1,104 positions, the last 200 text tokens supervised; bf16 compute, frozen
weights in bf16, trained ones as fp32 masters with AdamW; attention through cuDNN flash attention
(LlamaConfig.attention_impl="cudnn") after a parity check against XLA's attention, else XLA's.

Each stage runs in its own process (the device's peak memory is per process, and a crash or an
out-of-memory in one stage does not take the others down); an out-of-memory stage is retried
once with full rematerialisation, a stage failing otherwise with cuDNN attention once with XLA's.
No stage starts after --deadline_s and each is killed after --stage_timeout. The JSON is
rewritten after every stage, so a partial run still leaves its results; `--table PATH` prints
the README table of one. MFU = model FLOPs per step (graft_jax/bench/flops.py: 6N trainable, 4N frozen
with gradients flowing through, 2N forward-only, plus attention; LM head at supervised positions)
/ step time / peak (H200 dense bf16: 989 TFLOP/s).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGES = ("stage2_surrogate", "stage2_full", "stage3_full")
GOALS_MFU = {"stage3_full": 0.45, "stage2_surrogate": 0.35}
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "experiments/results/gpu"), "gpu_check.json"))
  p.add_argument("--tiny", action="store_true", help="tiny decoder and encoder (CPU smoke run)")
  p.add_argument("--model", default="llama-3.2-3b", help="decoder preset (ignored with --tiny)")
  p.add_argument("--stages", default=",".join(STAGES))
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--text_len", type=int, default=525, help="text tokens per row (plus 579 image embeddings)")
  p.add_argument("--supervised", type=int, default=200)
  p.add_argument("--image_pos", type=int, default=5)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--remat", default="none", help="decoder remat policy: none, dots, dots_no_batch, full")
  p.add_argument("--attention", default="auto", choices=("auto", "cudnn", "xla"),
                 help="auto: cuDNN on a GPU if the parity check passes, else XLA")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=8)
  p.add_argument("--peak_tflops", type=float, default=989.0, help="0: measure with a bf16 matmul")
  p.add_argument("--stage_timeout", type=int, default=170, help="seconds per stage process")
  p.add_argument("--deadline_s", type=int, default=450, help="no stage starts after this many seconds")
  p.add_argument("--inprocess", action="store_true", help="run the stages in this process")
  p.add_argument("--table", default="", help="print the Markdown table of an existing result JSON and exit")
  p.add_argument("--one", default="", help=argparse.SUPPRESS)   # internal: run one stage
  p.add_argument("--part", default="", help=argparse.SUPPRESS)  # internal: where it writes its result
  args = p.parse_args(argv)
  if args.tiny:  # tiny rows: 24 text tokens + 7 image embeddings
    for name, value in dict(batch=2, text_len=24, supervised=8, image_pos=3, warmup=1, steps=2).items():
      if getattr(args, name) == p.get_default(name):
        setattr(args, name, value)
  return args


def _platform() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.devices()[0].platform


def machine_info() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "platform": d.platform, "device": d.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__, "python": sys.version.split()[0],
          "xla_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")}


def attention_check(args) -> dict:
  """cuDNN flash attention vs XLA's on a one-layer bf16 decoder with the real head layout and
  sequence length: max |difference| of the logits and of the gradients (GPU only)."""
  if _platform() != "gpu":
    return {"skipped": "no GPU: cuDNN attention needs one", "use": "xla"}
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from graft_jax.bench.random_stage import stage_configs  # pylint: disable=g-import-not-at-top
  from graft_jax.models.llama import Decoder, init_params  # pylint: disable=g-import-not-at-top
  llm, vit, _ = stage_configs("tiny" if args.tiny else args.model, dtype=args.dtype)
  cfg = llm.replace(num_layers=1, vocab_size=1024, intermediate_size=1024)
  seq_len = args.text_len + vit.num_tokens + 2
  params = jax.jit(lambda k: init_params(cfg, k))(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, seq_len), 0, cfg.vocab_size)
  out = {}
  for impl in ("xla", "cudnn"):
    model = Decoder(cfg.replace(attention_impl=impl))
    loss = lambda p, m=model: jnp.mean(m.apply({"params": p}, tokens)[0].astype(jnp.float32) ** 2)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    out[impl] = (float(value), np.concatenate([np.asarray(g, np.float32).ravel() for g in jax.tree.leaves(grads)]))
  grad_diff = float(np.abs(out["xla"][1] - out["cudnn"][1]).max())
  grad_scale = float(np.abs(out["xla"][1]).max())
  loss_rel = abs(out["xla"][0] - out["cudnn"][0]) / max(abs(out["xla"][0]), 1e-9)
  ok = loss_rel <= 0.02 and grad_diff <= 0.05 * max(grad_scale, 1e-9)
  result = {"seq_len": seq_len, "heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
            "loss_rel_diff": loss_rel, "grad_max_abs_diff": grad_diff, "grad_max_abs": grad_scale, "ok": ok,
            "use": "cudnn" if ok else "xla"}
  try:
    from jax._src.cudnn.fused_attention_stablehlo import check_cudnn_version  # pylint: disable=g-import-not-at-top
    result["cudnn_version"] = check_cudnn_version()
  except Exception:  # pylint: disable=broad-except
    pass
  return result


def run_one(args, name: str) -> dict:
  """One stage at the configured size, in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from graft_jax.bench.batch import BatchShape, synthetic_batch  # pylint: disable=g-import-not-at-top
  from graft_jax.bench.jax_stages import get_bench_stage, prepare_stage, run_stage  # pylint: disable=g-import-not-at-top
  from graft_jax.bench.measure import device_memory_stats, matmul_peak_flops  # pylint: disable=g-import-not-at-top
  from graft_jax.bench.random_stage import count_params, random_stage_params, stage_configs  # pylint: disable=g-import-not-at-top
  from graft_jax.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top

  if name == "attention_check":
    return attention_check(args)
  stage = get_bench_stage(name)
  attention = args.attention if args.attention != "auto" else ("cudnn" if _platform() == "gpu" else "xla")
  llm, vit, plan = stage_configs("tiny" if args.tiny else args.model, dtype=args.dtype, remat=args.remat,
                                 attention=attention)
  start = time.perf_counter()
  model, params = random_stage_params(stage, llm, vit, plan, frozen_dtype=args.dtype)
  shape = BatchShape(batch=args.batch, text_len=args.text_len, supervised=args.supervised, image_pos=args.image_pos)
  batch = synthetic_batch(shape, llm.vocab_size, vit.image_size, model.image_len, text_only=stage.decoder_only)
  optimizer = make_optimizer(1e-5)
  prepared = prepare_stage(stage, model, params, batch, optimizer, frozen_dtype=jnp.dtype(args.dtype))
  total_params = count_params(params)
  del params
  setup = {"setup_s": time.perf_counter() - start,
           "device_peak_after_setup_bytes": device_memory_stats().get("peak_bytes_in_use")}
  peak = args.peak_tflops * 1e12 or matmul_peak_flops(4096 if _platform() == "gpu" else 512, jnp.bfloat16)
  result = run_stage(prepared, warmup=args.warmup, steps=args.steps, peak_flops=peak)
  result.update(setup, params=total_params, attention=attention, remat=args.remat,
                plan=plan.describe() if stage.on_surrogate else "full target",
                device_memory=device_memory_stats(), batch=args.batch, seq_len=args.text_len + model.image_len)
  jax.clear_caches()
  return result


def _stage_subprocess(args, name: str, part: str, timeout: float, remat: str, attention: str) -> dict:
  """Runs one stage in a child process; the child's result, or an error record."""
  cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--part", part, "--remat", remat,
         "--attention", attention, "--model", args.model, "--batch", str(args.batch),
         "--text_len", str(args.text_len), "--supervised", str(args.supervised), "--image_pos", str(args.image_pos),
         "--dtype", args.dtype, "--warmup", str(args.warmup), "--steps", str(args.steps),
         "--peak_tflops", str(args.peak_tflops)] + (["--tiny"] if args.tiny else [])
  if os.path.exists(part):
    os.remove(part)
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    tail, code = (proc.stdout + proc.stderr)[-3000:], proc.returncode
  except subprocess.TimeoutExpired as e:
    text = lambda x: x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
    tail = (text(e.stdout) + text(e.stderr))[-3000:]
    return {"stage": name, "error": f"timed out after {timeout:.0f} s", "log_tail": tail}
  if os.path.exists(part):
    with open(part) as f:
      return json.load(f)
  return {"stage": name, "error": f"process exited with code {code} and no result", "log_tail": tail}


def _run_guarded(args, name: str, remat: str, attention: str) -> dict:
  """In-process variant of _stage_subprocess: exceptions become error records."""
  try:
    args = argparse.Namespace(**{**vars(args), "remat": remat, "attention": attention})
    return run_one(args, name)
  except Exception as e:  # pylint: disable=broad-except
    return {"stage": name, "error": f"{type(e).__name__}: {e}"[:2000], "log_tail": traceback.format_exc()[-3000:]}


def summarize(stages: dict) -> dict:
  ok = {k: v for k, v in stages.items() if "error" not in v}
  summary = {}
  for name, goal in GOALS_MFU.items():
    if name in ok:
      summary[f"{name}_mfu"] = ok[name]["mfu"]
      summary[f"{name}_mfu_goal"] = goal
      summary[f"{name}_mfu_goal_met"] = ok[name]["mfu"] >= goal
  if "stage2_surrogate" in ok and "stage2_full" in ok:
    s, f = ok["stage2_surrogate"], ok["stage2_full"]
    summary["surrogate_full_time_ratio"] = s["step_s"] / f["step_s"]
    summary["surrogate_full_flops_ratio"] = s["step_flops"] / f["step_flops"]
  return summary


def write(path: str, results: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2, default=str)
  os.replace(tmp, path)


def drive(args) -> dict:
  """Runs the attention check and the stages, each guarded, writing the JSON after each one."""
  start = time.monotonic()
  names = [s for s in args.stages.split(",") if s]
  results = {"settings": {k: v for k, v in vars(args).items() if k not in ("one", "part")},
             "stages": {}, "complete": False}
  if args.inprocess:
    results["machine"] = machine_info()
  part_dir = os.path.dirname(os.path.abspath(args.out))

  def run(name, remat, attention):
    left = args.deadline_s - (time.monotonic() - start)
    if left <= 10:
      return {"stage": name, "error": f"skipped: deadline of {args.deadline_s} s reached"}
    if args.inprocess:
      return _run_guarded(args, name, remat, attention)
    part = os.path.join(part_dir, f".gpu_check_{name}.json")
    result = _stage_subprocess(args, name, part, min(args.stage_timeout, left), remat, attention)
    if os.path.exists(part):
      os.remove(part)
    return result

  attention = args.attention
  if attention == "auto":
    check = run("attention_check", args.remat, "xla")
    results["attention_check"] = check
    attention = check.get("use", "xla")
    print(f"attention check: {check}", flush=True)
    write(args.out, results)
  for name in names:
    print(f"stage {name} (attention {attention}, remat {args.remat}) ...", flush=True)
    result = run(name, args.remat, attention)
    if "error" in result and not result["error"].startswith("skipped"):
      oom = any(m in result["error"] + result.get("log_tail", "") for m in OOM_MARKERS)
      retry = ("full", attention) if oom and args.remat != "full" else (
          (args.remat, "xla") if not oom and attention == "cudnn" else None)
      if retry:
        print(f"  failed ({result['error'][:200]}); retrying with remat {retry[0]}, attention {retry[1]}", flush=True)
        result = {**run(name, *retry), "first_try_error": result["error"]}
    results["stages"][name] = result
    if "error" in result:
      print(f"  failed: {result['error']}", flush=True)
    else:
      if "machine" in result:
        results["machine"] = result.pop("machine")
      print(f"  {result['step_s']:.3f} s/step, {result['tokens_per_s']:,.0f} tokens/s, MFU "
            f"{100 * result['mfu']:.1f}%, compile {result['compile_s']:.1f} s, device peak "
            f"{(result.get('device_peak_bytes') or 0) / 2 ** 30:.1f} GiB", flush=True)
    results["summary"] = summarize(results["stages"])
    write(args.out, results)
  results["complete"] = all("error" not in results["stages"].get(n, {"error": 1}) for n in names)
  results["elapsed_s"] = time.monotonic() - start
  write(args.out, results)
  return results


def table(path: str) -> str:
  """The README table of a gpu_check JSON: one row per stage, then the goals."""
  from graft_jax.bench.report import stage_table  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    results = json.load(f)
  m = results.get("machine", {})
  lines = [f"{m.get('device', '?')}, jax {m.get('jax', '?')}, {m.get('date', '?')}; attention: "
           f"{results.get('attention_check', {}).get('use', results['settings'].get('attention'))}", "",
           stage_table(results, memory_key="device_peak_bytes"), ""]
  s = results.get("summary", {})
  for name, goal in GOALS_MFU.items():
    if f"{name}_mfu" in s:
      verdict = "met" if s[f"{name}_mfu"] >= goal else f"missed by {100 * (goal - s[f'{name}_mfu']):.1f} points"
      lines.append(f"{name}: MFU {100 * s[f'{name}_mfu']:.1f}% (goal {100 * goal:.0f}%: {verdict})")
  if "surrogate_full_time_ratio" in s:
    lines.append(f"surrogate/full step time {s['surrogate_full_time_ratio']:.3f} vs FLOPs ratio "
                 f"{s['surrogate_full_flops_ratio']:.3f}")
  return "\n".join(lines)


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.table:
    print(table(args.table))
    return {}
  if args.one:
    try:
      result = run_one(args, args.one)
      result["machine"] = machine_info()
    except Exception as e:  # pylint: disable=broad-except
      result = {"stage": args.one, "error": f"{type(e).__name__}: {e}"[:2000],
                "log_tail": traceback.format_exc()[-3000:]}
    write(args.part, result)
    return result
  results = drive(args)
  print(table(args.out))
  print(f"wrote {args.out}")
  return results


if __name__ == "__main__":
  main()
