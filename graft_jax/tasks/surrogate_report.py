"""Parameters and FLOPs per token of each preset target vs its surrogate (shapes only, no weights)."""
from __future__ import annotations

from graft_jax.cost import decoder_cost
from graft_jax.models.presets import preset
from graft_jax.surrogate import SurrogatePlan


def report_rows(plans, seq_len: int) -> list[dict]:
  """plans: [(preset name, translator ranges)]."""
  rows = []
  for name, ranges in plans:
    config = preset(name)
    plan = SurrogatePlan.create(config.num_layers, [tuple(r) for r in ranges])
    target = decoder_cost(config, None, seq_len)
    surrogate = decoder_cost(config, plan.segments, seq_len)
    rows.append({"model": name, "plan": plan.describe(), "target_layers": target.layers,
                 "surrogate_layers": surrogate.layers, "target_params": target.params,
                 "surrogate_params": surrogate.params,
                 "target_gflops": target.fwd_flops_per_token / 1e9,
                 "surrogate_gflops": surrogate.fwd_flops_per_token / 1e9,
                 "flops_ratio": surrogate.fwd_flops_per_token / target.fwd_flops_per_token})
  return rows


def format_table(rows: list[dict], seq_len: int) -> str:
  size = lambda n: f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
  lines = [f"| target | plan | layers | params | fwd GFLOP/token (T={seq_len}) | surrogate/target FLOPs |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['plan']} | {r['target_layers']} -> {r['surrogate_layers']} | "
                 f"{size(r['target_params'])} -> {size(r['surrogate_params'])} | "
                 f"{r['target_gflops']:.2f} -> {r['surrogate_gflops']:.2f} | {r['flops_ratio']:.2f} |")
  return "\n".join(lines)


def run(config) -> list[dict]:
  rows = report_rows(config.plans, config.seq_len)
  print(format_table(rows, config.seq_len))
  return rows
