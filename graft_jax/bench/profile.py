"""Where a training step's time goes: per-op times of a jitted JAX step (XLA's profiler) and of a
PyTorch step (torch.profiler), grouped into the same few categories so the two can be compared.

  ops = jax_op_times(runner, steps=2, trace_dir=tmp)     # {hlo op name: seconds per step}
  ops = torch_op_times(runner, steps=2)                  # {aten op: {"s": seconds per step, "flops": ...}}
  table = category_table({"graft_jax": by_category(ops, "jax"), ...}, step_s={"graft_jax": 3.9, ...})

On the CPU, XLA runs the step as a sequence of thunks, each one HLO op or fusion (`hlo_op` in the
trace: `dot.12`, `ynn_fusion.3` for the matmuls it hands to YNNPACK, `loop_multiply_fusion`, ...);
the profiler records each thunk's duration. The times are summed per op, so ops that run at the same
time on different threads both count: the sum can exceed the step's wall time.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from typing import Callable

import jax

CATEGORIES = ("matmul", "attention softmax", "elementwise + norms", "copies + transposes",
              "gather / scatter / slicing", "reductions", "other")

_JAX_RULES = (  # (category, regex on the HLO op name without its numeric suffix), first match wins
    ("matmul", r"^(dot|ynn_fusion|.*dot_fusion|convolution|.*gemm|custom-call)"),
    ("copies + transposes", r"^(copy|transpose|.*transpose_fusion|.*copy_fusion|bitcast|reshape)"),
    ("gather / scatter / slicing", r"^(gather|scatter|dynamic|slice|concatenate|pad|.*gather|.*scatter|"
                                   r".*slice|.*concatenate|select-and-scatter|iota)"),
    ("reductions", r"^(reduce|.*reduce.*|.*reduction.*)"),
    ("elementwise + norms", r"^(fusion|loop_.*|input_.*|add|multiply|subtract|divide|exp|log|rsqrt|"
                            r"maximum|minimum|select|compare|convert|negate|tanh|broadcast|.*fusion)"),
)
_TORCH_RULES = (
    ("matmul", r"^aten::(mm|addmm|bmm|baddbmm|linear|matmul|conv|_convolution|mkldnn_)"),
    ("attention softmax", r"^aten::(_softmax|softmax|_softmax_backward_data|_scaled_dot_product|"
                          r"scaled_dot_product|_efficient_attention|_flash_attention)"),
    ("copies + transposes", r"^aten::(copy_|clone|contiguous|t|transpose|permute|_to_copy|to|view|reshape|"
                            r"_unsafe_view|expand|as_strided)$"),
    ("gather / scatter / slicing", r"^aten::(index|index_select|gather|scatter|slice|cat|select|embedding|"
                                   r"narrow|split|chunk|index_put|masked_)"),
    ("reductions", r"^aten::(sum|mean|norm|max|min|_foreach_norm|linalg_vector_norm|logsumexp|amax)"),
    ("elementwise + norms", r"^aten::"),
)


def _base_name(op: str) -> str:
  return re.sub(r"(\.\d+)+$", "", op)


def categorize(op: str, framework: str) -> str:
  """The category of a JAX HLO op name (`framework="jax"`) or a torch aten op ("torch")."""
  rules = _JAX_RULES if framework == "jax" else _TORCH_RULES
  name = _base_name(op) if framework == "jax" else op
  for category, pattern in rules:
    if re.match(pattern, name):
      return category
  return "other"


def parse_perfetto_ops(path: str) -> dict[str, float]:
  """{hlo op: total seconds} of the XLA thunks in a perfetto trace (`create_perfetto_trace=True`)."""
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  out: dict[str, float] = collections.defaultdict(float)
  for e in events:
    op = (e.get("args") or {}).get("hlo_op")
    if e.get("ph") == "X" and op and not e["name"].startswith("end: "):
      out[op] += e.get("dur", 0.0) * 1e-6
  return dict(out)


def jax_op_times(run: Callable[[], None], *, steps: int, trace_dir: str) -> dict[str, float]:
  """{hlo op: seconds per step} over `steps` calls of `run` (each runs one already-compiled,
  blocking step) under XLA's profiler; the trace is written under trace_dir."""
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(steps):
      run()
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"The profiler wrote no perfetto trace under {trace_dir}")
  return {op: s / steps for op, s in parse_perfetto_ops(paths[-1]).items()}


def torch_op_times(run: Callable[[], None], *, steps: int) -> dict[str, dict]:
  """{aten op: {"s": self CPU seconds per step, "calls": per step, "flops": per step}} over
  `steps` calls of `run` under torch.profiler (self time: an op's children are not counted twice)."""
  from torch.profiler import ProfilerActivity, profile  # pylint: disable=g-import-not-at-top
  with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
    for _ in range(steps):
      run()
  return {e.key: {"s": e.self_cpu_time_total * 1e-6 / steps, "calls": e.count / steps,
                  "flops": float(e.flops or 0) / steps}
          for e in prof.key_averages() if e.self_cpu_time_total > 0}


def by_category(op_seconds: dict[str, float], framework: str) -> dict[str, float]:
  """{category: seconds} summed over ops, every category of CATEGORIES present."""
  out = {c: 0.0 for c in CATEGORIES}
  for op, s in op_seconds.items():
    out[categorize(op, framework)] += s
  return out


def top_ops(op_seconds: dict[str, float], framework: str, n: int = 8) -> list[tuple[str, str, float]]:
  """The n ops with the most time: (op, category, seconds)."""
  ranked = sorted(op_seconds.items(), key=lambda kv: -kv[1])[:n]
  return [(op, categorize(op, framework), s) for op, s in ranked]


def category_table(columns: dict[str, dict[str, float]], step_s: dict[str, float],
                   profiled_step_s: dict[str, float] | None = None) -> str:
  """Markdown: seconds per step in each category for each framework column, the sum, the step's
  wall time unprofiled and (if given) under the profiler."""
  names = list(columns)
  lines = ["| category | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for c in CATEGORIES:
    if any(columns[n][c] > 0 for n in names):
      lines.append(f"| {c} | " + " | ".join(f"{columns[n][c]:.3f} s" for n in names) + " |")
  lines.append("| sum of op times | " + " | ".join(f"{sum(columns[n].values()):.3f} s" for n in names) + " |")
  lines.append("| step wall time | " + " | ".join(f"{step_s[n]:.3f} s" for n in names) + " |")
  if profiled_step_s:
    lines.append("| step wall time under the profiler | "
                 + " | ".join(f"{profiled_step_s[n]:.3f} s" for n in names) + " |")
  return "\n".join(lines)
