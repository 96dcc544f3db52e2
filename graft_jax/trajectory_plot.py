"""The prediction-trajectory plot in the paper's style: one faint line per sample, score vs layer."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from graft_jax.trajectory import Transition


def plot_trajectory(path: str, normalized: np.ndarray, full: np.ndarray, transition: Transition,
                    title: str) -> None:
  """normalized, full: float[L, S] scores; writes a two-panel PNG to `path`."""
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  layers = np.arange(normalized.shape[0])
  panels = [(normalized, "position-normalised KL(q_l || p)"), (full, "full-vocabulary KL(final || layer)")]
  for ax, (scores, ylabel) in zip(axes, panels):
    ax.plot(layers, scores, color="tab:blue", alpha=0.12, linewidth=0.8)
    ax.plot(layers, scores.mean(axis=1), color="black", linewidth=2, label="mean")
    ax.axvline(transition.layer, color="tab:red", linestyle="--", label=f"transition ({transition.layer})")
    ax.axvspan(transition.start - 0.5, transition.end + 0.5, color="tab:orange", alpha=0.15,
               label=f"translator range [{transition.start}, {transition.end}]")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend(loc="upper right", fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
