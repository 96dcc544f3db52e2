"""Issue 9's study: graft accuracy against surrogate fidelity and compute saved, on SmolLM2.

  python experiments/fidelity_study.py --list            # cells, sizes, estimated CPU time
  python experiments/fidelity_study.py                   # every cell not yet in cells.json, in order
  python experiments/fidelity_study.py --frontier        # only the range sweep (the frontier), ~3 h
  python experiments/fidelity_study.py --cell a19_norm   # (re)run one cell alone (resumes its runs)
  python experiments/fidelity_study.py --report          # rewrite table.md and the plots from cells.json
  python experiments/fidelity_study.py --seeds 0 --cell a19_stage1   # a one-seed pilot of a cell

Each cell is one run of the main job (configs/surrogate.py:full, graft_jax/tasks/surrogate.py)
with the study's base recipe (graft_jax/fidelity_study/cells.py STUDY_SIZE: seeds 0, 1, 2; stage 0
fitted to the target's hidden states, 600 steps on 512 chats; 100 stage-2 steps of 16 samples; the
first 125 held-out colour and shape questions) and the cell's changes, under runs/fidelity_study/<cell>/, conditions "surrogate" and "target";
then the fidelity measures of its surrogate and trained encoders. Writes
experiments/results/fidelity_study/{cells.json, table.md, graft_vs_start.png, graft_vs_kl.png,
frontier.png}. Delete runs/fidelity_study/<cell>/ to start a cell over.

--seeds runs the cells on those seeds only (a pilot) and writes its table to
<results>/pilot_seeds<seeds>/ instead, so one-seed cells never mix with the study's three-seed
table; the runs are the same per-seed runs, so a later three-seed run of the cell resumes them.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_job_config(size: str = "full"):
  """configs/surrogate.py:<size>, as `--config=configs/surrogate.py:<size>` loads it."""
  spec = importlib.util.spec_from_file_location("surrogate_config", os.path.join(REPO, "configs", "surrogate.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(size)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cell", action="append", default=[], help="run only this cell (repeatable)")
  parser.add_argument("--list", action="store_true", help="print the cells with sizes and estimated time")
  parser.add_argument("--frontier", action="store_true",
                      help="only the range-start cells (list or run them), not the levers")
  parser.add_argument("--report", action="store_true", help="only rewrite table.md and the plots")
  parser.add_argument("--seeds", default="", help="comma-separated seeds of a pilot (default: the study's)")
  parser.add_argument("--root", default=os.path.join(REPO, "runs", "fidelity_study"))
  parser.add_argument("--results", default=os.path.join(REPO, "experiments", "results", "fidelity_study"))
  args = parser.parse_args(argv)

  from graft_jax.fidelity_study import cells as cells_lib  # pylint: disable=g-import-not-at-top
  from graft_jax.fidelity_study import driver, report  # pylint: disable=g-import-not-at-top
  from graft_jax.models.presets import preset  # pylint: disable=g-import-not-at-top

  base = cells_lib.study_job(main_job_config())
  if args.seeds:
    base.seeds = tuple(int(s) for s in args.seeds.split(","))
    args.results = os.path.join(args.results, "pilot_seeds" + "_".join(str(s) for s in base.seeds))
  cells = cells_lib.default_cells()
  if args.frontier:
    cells = [c for c in cells if c.axis == "range start"]
  if args.list:
    print(f"base recipe: {cells_lib.STUDY_SIZE}, seeds run {tuple(base.seeds)}, range end {base.ranges[0][1]}")
    print(driver.listing(base, cells, args.root, preset(base.model.preset)))
    return
  cells_json = os.path.join(args.results, "cells.json")
  if args.report:
    print(report.write_report(args.results, report.load_cells(cells_json)))
    return
  if args.cell:
    todo = [cells_lib.find_cell(cells, name) for name in args.cell]
  else:
    done = report.load_cells(cells_json)
    todo = [c for c in cells if c.name not in done]
  os.chdir(REPO)  # the main job's data and model paths are relative to the repository
  for cell in todo:
    driver.run_cell(base, cell, args.root, args.results)


if __name__ == "__main__":
  main(sys.argv[1:])
