"""The reproduction's outputs: results.json, results.md (the table) and the plots."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from graft_jax.reproduction.scoring import mean_and_spread  # pylint: disable=wrong-import-position

# (key, row label): encoder trained on -> evaluated on.
ROWS = (
    ("a_surrogate_on_surrogate", "(a) trained on the surrogate, evaluated on the surrogate"),
    ("b_surrogate_grafted", "(b) the same encoder grafted onto the full target, zero-shot"),
    ("c_target_on_target", "(c) trained directly on the full target (same steps and samples)"),
    ("d_truncation_grafted", "(d) trained on the plain truncation (translator untrained), grafted"),
    ("e_untrained_grafted", "(e) untrained encoder on the full target (floor)"),
    ("prior_no_image", "answer prior of the training split, no image (blind floor)"),
    ("c2_target_on_surrogate", "trained on the full target, evaluated on the surrogate"),
    ("d2_truncation_on_truncation", "trained on the plain truncation, evaluated on it"),
)


def row_label(key: str) -> str:
  """The table label of a row: ROWS', or for "a_on_mix<i>" the encoder of (a) on surrogate i of a mix."""
  if key.startswith("a_on_mix"):
    return f"(a)'s encoder evaluated on the mix's surrogate {key[len('a_on_mix'):]} (mix_ranges)"
  return dict(ROWS)[key]


def _row_keys(per_seed: Mapping) -> list[str]:
  """ROWS' keys, then any mix rows the seeds have."""
  mix = sorted({k for scores in per_seed.values() for k in scores if k.startswith("a_on_mix")})
  return [key for key, _ in ROWS] + mix


def summarize(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict]:
  """{seed: {row: scores}} -> {row: {"overall": mean/std/..., "by_type": {type: mean/std/...}}}."""
  out = {}
  for key in _row_keys(per_seed):
    runs = [scores[key] for scores in per_seed.values() if key in scores]
    if not runs:
      continue
    types = sorted(runs[0].get("by_question_type", {}))
    out[key] = {"overall": mean_and_spread([r["overall"]["accuracy"] for r in runs]),
                "by_type": {t: mean_and_spread([r["by_question_type"][t]["accuracy"] for r in runs])
                            for t in types}}
  return out


def _cell(stat: Mapping[str, float]) -> str:
  return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def results_table(summary: Mapping[str, dict]) -> str:
  """Markdown: one row per condition, overall accuracy and per question type (mean ± std over seeds)."""
  types = sorted({t for row in summary.values() for t in row["by_type"]})
  lines = ["| condition | overall | " + " | ".join(types) + " |", "|---|---|" + "---|" * len(types)]
  for key in _row_keys({0: summary}):
    if key in summary:
      row = summary[key]
      lines.append(f"| {row_label(key)} | {_cell(row['overall'])} | "
                   + " | ".join(_cell(row["by_type"][t]) for t in types) + " |")
  return "\n".join(lines)


def transfer_table(transfer: Mapping[str, Any]) -> str:
  """Markdown: each (f) evaluation point with its cumulative compute."""
  lines = ["| start | stage-3 step | accuracy | decoder PFLOPs (cumulative) | wall-clock s (cumulative) |",
           "|---|---|---|---|---|"]
  for name, curve in transfer["curves"].items():
    for p in curve:
      lines.append(f"| {name} | {p['step']} | {p['accuracy']:.3f} | {p['flops'] / 1e15:.2f} | {p['seconds']:.0f} |")
  saving = transfer.get("saving")
  if saving:
    lines.append("")
    lines.append(saving["statement"])
  return "\n".join(lines)


def plot_transfer(transfer: Mapping[str, Any], path: str) -> None:
  """Accuracy against cumulative decoder FLOPs and wall-clock, one line per start."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name, curve in transfer["curves"].items():
    axes[0].plot([p["flops"] / 1e15 for p in curve], [p["accuracy"] for p in curve], "o-", label=name)
    axes[1].plot([p["seconds"] / 60 for p in curve], [p["accuracy"] for p in curve], "o-", label=name)
  axes[0].set_xlabel("training compute, decoder PFLOPs (cumulative)")
  axes[1].set_xlabel("training wall-clock, minutes (cumulative, 2-core CPU)")
  for ax in axes:
    ax.set_ylabel("held-out accuracy (full target)")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle("Transfer: stage 3 from the graft vs from an adapter-only start")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_examples(image_paths: Sequence[str], questions: Sequence[str], answers: Mapping[str, Sequence[str]],
                  references: Sequence[str], path: str) -> None:
  """A grid of held-out images with the question, the reference and each model's answer."""
  n = len(image_paths)
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.9))
  for i, ax in enumerate(axes if n > 1 else [axes]):
    ax.imshow(Image.open(image_paths[i]).convert("RGB"))
    ax.set_axis_off()
    lines = [questions[i], f"ref: {references[i]}"] + [f"{k}: {v[i][:18]}" for k, v in answers.items()]
    ax.set_title("\n".join(lines), fontsize=7, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_outputs(out_dir: str, results: Mapping[str, Any]) -> str:
  """results.json and results.md under out_dir; returns the Markdown."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  parts = ["## Zero-shot grafting on SmolLM2-135M-Instruct", "", results["setup"], "",
           results_table(results["summary"]), ""]
  if results.get("transfer"):
    parts += ["### Transfer (f)", "", transfer_table(results["transfer"]), ""]
  markdown = "\n".join(parts)
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(markdown)
  return markdown
