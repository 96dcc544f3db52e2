"""Loss curves of training runs: python experiments/plot_losses.py RUN_DIR [RUN_DIR ...] --out PNG

Reads each run's metrics.jsonl (graft_jax/train/metrics.py) and plots loss vs step, one panel per
run, titled with the run directory's name; prints first/last/min loss per run.
"""
from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from graft_jax.train.metrics import read_metrics


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("runs", nargs="+")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  fig, axes = plt.subplots(1, len(args.runs), figsize=(4.2 * len(args.runs), 3.4), squeeze=False)
  for ax, run in zip(axes[0], args.runs):
    records = read_metrics(run)
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    ax.plot(steps, losses, linewidth=1.2)
    ax.set_title(os.path.basename(os.path.normpath(run)))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (global token mean CE)")
    ax.grid(alpha=0.3)
    print(f"{run}: steps {len(steps)}, loss first {losses[0]:.3f}, last {losses[-1]:.3f}, "
          f"min {min(losses):.3f}")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
  main()
