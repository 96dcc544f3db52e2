"""The cost planner task: hours of the surrogate route vs the usual recipe (graft_jax/cost_planner.py)."""
from __future__ import annotations

from graft_jax.cost_planner import estimate, format_report, write_json


def run(config) -> dict:
  result = estimate(config)
  print(format_report(result))
  if config.out:
    write_json(result, config.out)
    print(f"wrote {config.out}")
  return result
