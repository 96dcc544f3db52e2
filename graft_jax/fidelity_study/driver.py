"""Running cells: the main job per cell (shared runs linked first), its measures, its record, and
the report rewritten from every record so far."""
from __future__ import annotations

import os
import time
from typing import Sequence

from graft_jax.fidelity_study import report, sharing
from graft_jax.fidelity_study.cells import Cell, cell_job
from graft_jax.fidelity_study.estimate import cell_seconds
from graft_jax.fidelity_study.measure import MeasureSettings, measure_cell
from graft_jax.models.config import LlamaConfig
from graft_jax.tasks import surrogate as main_job


def run_cell(base, cell: Cell, root: str, results_dir: str, settings: MeasureSettings = MeasureSettings()) -> dict:
  """Runs (or resumes) one cell under root/<cell.name>, adds its record to
  results_dir/cells.json and rewrites table.md and the plots. Returns the record."""
  job = cell_job(base, cell, root)
  cells_json = os.path.join(results_dir, "cells.json")
  earlier = report.load_cells(cells_json).get(cell.name) if os.path.isdir(job.run_dir) else None
  dirs = sharing.link_shared_runs(job, root)
  start = time.time()
  print(f"=== cell {cell.name} ({cell.axis}): range {tuple(job.ranges[0])}, changes {cell.changes() or 'none'}")
  results = main_job.run(job)
  sharing.share_scores(job, dirs)  # dirs from before the run, which points job.vit.source at the encoder
  measures = measure_cell(job, settings, results["fidelity"])
  record = report.cell_record(cell, job, results, measures, report.cell_seconds_so_far(earlier, time.time() - start))
  cells = report.save_cell(cells_json, record)
  print(report.write_report(results_dir, cells))
  return record


def listing(base, cells: Sequence[Cell], root: str, llm: LlamaConfig) -> str:
  """One line per cell: range, changes, layers kept, estimated minutes alone and in order
  (runs shared with an earlier cell counted once)."""
  seen_translators, seen_targets = set(), set()
  lines, total = [], 0.0
  for cell in cells:
    job = cell_job(base, cell, root)
    dirs = sharing.shared_dirs(job, root)
    alone = cell_seconds(job, llm)["total"]
    in_order = cell_seconds(job, llm, dirs["translator"] in seen_translators, dirs["target"] in seen_targets)["total"]
    seen_translators.add(dirs["translator"])
    seen_targets.add(dirs["target"])
    total += in_order
    changes = ", ".join(f"{k}={v}" for k, v in cell.changes().items()) or "base recipe"
    lines.append(f"{cell.name:<14} range {tuple(job.ranges[0])!s:<9} {changes:<32} "
                 f"~{alone / 60:4.0f} min alone, ~{in_order / 60:4.0f} min in order")
  lines.append(f"{'all':<14} ~{total / 3600:.1f} h on 2 CPU cores (rough; cells.json records measured times)")
  return "\n".join(lines)
