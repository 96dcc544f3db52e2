"""Dry runs of the paper's recipes on N simulated CPU devices, and the README's table.

  python experiments/paper_dry_run.py --devices 8 --targets llama-3.1-70b [--stages pretrain ...]
  python experiments/paper_dry_run.py --table        # the Markdown table of everything recorded

Each run is `configs/paper/recipe.py:TARGET,STAGE --config.dry_run=True` at full width on the
default mesh (pure FSDP over the N devices) for an 80 GiB device (h100-80gb preset), recorded as
one JSON line in experiments/results/paper/dry_run.jsonl (a rerun of the same case replaces it).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "paper", "dry_run.jsonl")
GIB = 2 ** 30


def run(devices: int, targets: list[str], stages: list[str], device: str) -> None:
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  from graft_jax.paper.footprint import PlanDoesNotFit  # pylint: disable=g-import-not-at-top
  from graft_jax.paper.launch import launch  # pylint: disable=g-import-not-at-top
  from graft_jax.paper.recipe import recipe_config  # pylint: disable=g-import-not-at-top
  for target in targets:
    for stage in stages:
      config = recipe_config(target, stage)  # what configs/paper/recipe.py:TARGET,STAGE returns
      config.dry_run, config.hardware.device = True, device
      config.lock()
      with contextlib.redirect_stdout(io.StringIO()):
        try:
          report, error = launch(config), ""
        except PlanDoesNotFit as e:
          report, error = e.report, str(e)
      record = {**report, "error": error}
      _save(record)
      print(row(record), flush=True)


def _save(record: dict) -> None:
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  key = (record["recipe"], record["devices"], record["device"])
  kept = []
  if os.path.exists(RESULTS):
    kept = [json.loads(line) for line in open(RESULTS) if line.strip()]
    kept = [r for r in kept if (r["recipe"], r["devices"], r["device"]) != key]
  with open(RESULTS, "w") as f:
    for r in kept + [record]:
      f.write(json.dumps(r) + "\n")


def row(r: dict) -> str:
  b = r["bytes_per_device"]
  gib = lambda n: "-" if n is None else f"{n / GIB:.1f}"
  advice = re.search(r"use fsdp >= \d+|lower train.per_device_batch", r["error"])
  verdict = f"no: {advice.group(0) if advice else r['error']}" if r["error"] else "yes"
  target, stage = r["recipe"].split(",")
  decoder = f"{r['decoder_layers']} layers, {r['decoder_params'] / 1e9:.2f}B"
  return (f"| {target} | {stage} | {decoder} | {r['trainable_params'] / 1e9:.3f}B | {r['devices']} | "
          f"{r['per_device_batch']} x {r['microbatches']} | {gib(b['params'])} | {gib(b['optimizer'])} | "
          f"{gib(b['activations'])} | {gib(b['total'])} | {verdict} | {r['flops_per_step'] / 1e15:.1f} | "
          f"{r['step_time_s']:.1f} |")


HEADER = ("| target | stage | decoder | trains | devices | rows/device x micro-batches | params GiB/dev | "
          "optimizer GiB/dev | activations+temp GiB/dev | peak GiB/dev | fits 80 GiB? | model PFLOP/step | "
          "step s at 40% MFU (H100) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--targets", nargs="+", default=["llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"])
  parser.add_argument("--stages", nargs="+", default=["translator", "pretrain", "finetune_encoder",
                                                      "finetune_decoder", "finetune_encoder_full"])
  parser.add_argument("--device", default="h100-80gb")
  parser.add_argument("--table", action="store_true")
  args = parser.parse_args()
  if args.table:  # Llama-3.1-70B by stage and mesh, then the others by target and stage
    records = [json.loads(line) for line in open(RESULTS) if line.strip()]
    targets = parser.get_default("targets")[::-1]
    order = {s: i for i, s in enumerate(parser.get_default("stages"))}
    key = lambda r: (targets.index(r["recipe"].split(",")[0]), order[r["recipe"].split(",")[1]], r["devices"])
    for big in (True, False):
      print(HEADER)
      print("\n".join(row(r) for r in sorted(records, key=key) if (r["recipe"].startswith("llama-3.1-70b")) == big))
      print()
    return
  print(HEADER)
  run(args.devices, args.targets, args.stages, args.device)


if __name__ == "__main__":
  main()
