"""Markdown tables and goal lines for the benchmarks' JSON results."""
from __future__ import annotations

import json
import os

GOAL_SPEEDUP = 1.3          # graft_jax stage-2 tokens/s over the PyTorch reference
GOAL_RATIO_TOLERANCE = 0.10  # surrogate/full step-time ratio within 10% of the FLOPs ratio


def _size(n: float | None) -> str:
  if n is None:
    return "-"
  return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def _params(n: int | None) -> str:
  if n is None:
    return "-"
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def stage_table(results: dict, memory_key: str = "host_rss_peak_bytes") -> str:
  """One row per graft_jax stage and per reference run: trainable params, median step time,
  tokens/s, compile time, peak memory, model GFLOP per step, MFU."""
  lines = ["| step | trainable | step time (median) | tokens/s | compile | peak memory | GFLOP/step | MFU |",
           "|---|---|---|---|---|---|---|---|"]
  for r in results.get("stages", {}).values():
    if "error" in r:
      lines.append(f"| graft_jax: {r.get('label', r['stage'])} | failed: {r['error'][:80]} | | | | | | |")
      continue
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
    lines.append(f"| graft_jax: {r['label']} | {_params(r['trainable_params'])} | {r['step_s']:.3f} s | "
                 f"{r['tokens_per_s']:,.0f} | {r['compile_s']:.1f} s | {_size(r.get(memory_key))} | "
                 f"{r['step_flops'] / 1e9:,.1f} | {mfu} |")
  for name, r in results.get("reference", {}).items():
    label = "stage 2 on the surrogate" if name == "stage2_surrogate" else "stage 2 on the full target"
    lines.append(f"| PyTorch reference: {label} | {_params(r['trainable_params'])} | {r['step_s']:.3f} s | "
                 f"{r['tokens_per_s']:,.0f} | - | {_size(r.get(memory_key))} | - | - |")
  return "\n".join(lines)


def goal_lines(summary: dict) -> list[str]:
  """The two CPU goals, each with its measured value and whether it is met (and by how much not)."""
  lines = []
  if "surrogate_full_time_ratio" in summary:
    t, f, d = (summary[k] for k in ("surrogate_full_time_ratio", "surrogate_full_flops_ratio",
                                    "time_vs_flops_ratio_deviation"))
    verdict = "met" if abs(d) <= GOAL_RATIO_TOLERANCE else f"missed by {100 * (abs(d) - GOAL_RATIO_TOLERANCE):.1f} points"
    of_medians = summary.get("surrogate_full_time_ratio_of_medians")
    lines.append(f"surrogate/full step time (stage 2) {t:.3f} vs FLOPs ratio {f:.3f}: {100 * d:+.1f}% "
                 f"(goal within {100 * GOAL_RATIO_TOLERANCE:.0f}%: {verdict})"
                 + (f"; ratio of median step times {of_medians:.3f}" if of_medians is not None else ""))
  if "stage2_surrogate_speedup_vs_reference" in summary:
    s = summary["stage2_surrogate_speedup_vs_reference"]
    verdict = "met" if s >= GOAL_SPEEDUP else f"missed by {100 * (1 - s / GOAL_SPEEDUP):.0f}% (x{GOAL_SPEEDUP / s:.2f} short)"
    jax_loss, ref_loss = summary["stage2_surrogate_first_loss_jax_vs_reference"]
    of_medians = summary.get("stage2_surrogate_speedup_vs_reference_of_medians")
    lines.append(f"graft_jax / PyTorch reference, stage 2 on the surrogate: x{s:.2f} tokens/s "
                 f"(goal x{GOAL_SPEEDUP}: {verdict})"
                 + (f"; ratio of medians x{of_medians:.2f}" if of_medians is not None else "")
                 + f"; first-step loss {jax_loss:.4f} vs {ref_loss:.4f}")
  if "stage2_full_speedup_vs_reference" in summary:
    lines.append(f"graft_jax / PyTorch reference, stage 2 on the full target: "
                 f"x{summary['stage2_full_speedup_vs_reference']:.2f} tokens/s")
  return lines


def write_json(path: str, results: dict) -> None:
  """Writes a benchmark's results to `path` (folders made as needed) and says so."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(results, f, indent=2)
  print(f"\nwrote {path}")
