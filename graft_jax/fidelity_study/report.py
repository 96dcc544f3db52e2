"""The study's outputs: one record per cell (cells.json), the table (table.md) and the plots."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from graft_jax.reproduction.scoring import mean_and_spread  # pylint: disable=wrong-import-position

ROWS = {"surrogate": "a_surrogate_on_surrogate", "graft": "b_surrogate_grafted", "target": "c_target_on_target",
        "target_on_surrogate": "c2_target_on_surrogate"}
GRAFT_BAR, FLOPS_BAR = 0.9, 0.25  # issue 9: graft >= 90% of the direct encoder while saving >= 25%
PLOTS = ("graft_vs_start.png", "graft_vs_kl.png", "frontier.png")


def _seed_mean(measures: Mapping[str, Any], encoder: str, key: str) -> dict | None:
  values = [m[encoder][key] for m in measures["image"].values() if encoder in m]
  return mean_and_spread(values) if values else None


def cell_record(cell, job, results: Mapping[str, Any], measures: Mapping[str, Any], seconds: float) -> dict:
  """One cell's line of cells.json from the main job's results and the cell's measures."""
  summary = results["summary"]
  rows = {**ROWS, **{f"surrogate_{k[2:]}": k for k in summary if k.startswith("a_on_mix")}}  # "surrogate_on_mix1"
  accuracy = {k: summary[row]["overall"] for k, row in rows.items() if row in summary}
  by_type = {k: {t: s["mean"] for t, s in summary[row]["by_type"].items()} for k, row in rows.items() if row in summary}
  ratio = None
  if "graft" in accuracy and "target" in accuracy and accuracy["target"]["mean"] > 0:
    ratio = accuracy["graft"]["mean"] / accuracy["target"]["mean"]
  text = measures["text"]
  trained_text = [v for k, v in text.items() if k.endswith("_stage1")] or [text["translator"]]
  fidelity = {
      "text_kl_untrained": text["untrained"]["kl"],
      "text_kl": float(np.mean([t["kl"] for t in trained_text])),
      "text_rel_l2": float(np.mean([t["rel_l2"] for t in trained_text])),
      "text_cos": float(np.mean([t["cos"] for t in trained_text])),
  }
  for encoder, prefix in (("surrogate_encoder", "image"), ("target_encoder", "image_target_enc")):
    for key in ("kl", "rel_l2", "cos", "rel_l2_image", "cos_image"):
      stat = _seed_mean(measures, encoder, key)
      if stat is not None:
        fidelity[f"{prefix}_{key}"] = stat["mean"]
  embedding = {}
  for encoder in ("surrogate_encoder", "target_encoder"):
    stats = [m[encoder]["embeddings"] for m in measures["image"].values() if encoder in m]
    if stats:
      embedding[encoder] = {k: float(np.mean([s[k] for s in stats])) for k in
                            ("norm_ratio", "image_rms", "token_rms", "mean_direction_cos", "nearest_cos")}
      embedding[encoder]["nearest_tokens_seed0"] = stats[0]["nearest_tokens"]
  saved = float(results["flops_saved_per_token"])
  return {"name": cell.name, "axis": cell.axis, "changes": cell.changes(), "range": list(job.ranges[0]),
          "plan": results["plan"]["description"], "layers_kept": sum(len(s[2]) for s in results["plan"]["segments"]),
          "num_layers": results["plan"]["num_layers"], "flops_saved_per_token": saved,
          "flops_saved_short": measures.get("flops_saved_short"), "seeds": list(job.seeds),
          "steps": job.steps.to_dict(), "translator_kl_weight": job.translator_kl_weight,
          "pretrain_kl_weight": job.get("pretrain_kl_weight", 0.0), "pretrain_kl_rows": job.get("pretrain_kl_rows", "text"),
          "output_norm": job.vit.get("output_norm", "none"), "image_noise": job.get("image_noise", 0.0),
          "embed_penalty": job.get("embed_penalty", 0.0),
          "accuracy": accuracy, "by_type": by_type, "graft_over_target": ratio,
          "meets_bar": bool(ratio is not None and ratio >= GRAFT_BAR and saved >= FLOPS_BAR),
          "fidelity": fidelity, "embedding": embedding, "measures": measures, "seconds": seconds}


def cell_seconds_so_far(earlier: Mapping[str, Any] | None, seconds: float) -> float:
  """A cell's wall-clock: this run's `seconds` plus those of the `earlier` record of the same
  cell when this run resumed its runs (None: a fresh cell, or no record), so a rerun that only adds
  a score does not replace the cell's cost by its own few minutes."""
  return seconds + (float(earlier.get("seconds", 0.0)) if earlier else 0.0)


def load_cells(path: str) -> dict[str, dict]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def save_cell(path: str, record: dict) -> dict[str, dict]:
  """Adds (or replaces) one record in cells.json; returns all records."""
  cells = load_cells(path)
  cells[record["name"]] = record
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(cells, f, indent=1)
  return cells


def _acc(record: dict, key: str) -> str:
  stat = record["accuracy"].get(key)
  if stat is None:
    return "-"
  return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def _num(value, fmt: str = "{:.3f}") -> str:
  return "-" if value is None else fmt.format(value)


def table(cells: Mapping[str, dict]) -> str:
  """Markdown: one row per cell, accuracies (mean ± std over seeds) and fidelity measures."""
  lines = ["| cell | varies | plan (layers kept) | FLOPs saved | surrogate (a) | graft (b) | target (c) | b / c "
           "| text KL untrained -> trained | image KL | hidden rel-L2 text / image | image/token norm "
           "| nearest-token cos | bar |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in cells.values():
    f, emb = r["fidelity"], r["embedding"].get("surrogate_encoder", {})
    changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
    plan = f"[{r['range'][0]}, {r['range'][1]}] ({r['layers_kept']}/{r['num_layers']})"
    short = "" if r.get("flops_saved_short") is None else f" ({r['flops_saved_short']:.1%})"
    lines.append(
        f"| {r['name']} | {r['axis']}: {changes} | {plan} | {r['flops_saved_per_token']:.1%}{short} "
        f"| {_acc(r, 'surrogate')} | {_acc(r, 'graft')} | {_acc(r, 'target')} "
        f"| {_num(r['graft_over_target'], '{:.2f}')} | {f['text_kl_untrained']:.2f} -> {f['text_kl']:.2f} "
        f"| {_num(f.get('image_kl'), '{:.2f}')} | {f['text_rel_l2']:.3f} / {_num(f.get('image_rel_l2'))} "
        f"| {_num(emb.get('norm_ratio'), '{:.2f}')} | {_num(emb.get('nearest_cos'))} "
        f"| {'yes' if r['meets_bar'] else 'no'} |")
  return "\n".join(lines)


def write_table(path: str, cells: Mapping[str, dict]) -> str:
  text = "\n".join([
      "## Fidelity study (issue 9)", "",
      "Accuracy on held-out questions (mean ± std over seeds). (a) encoder trained on the surrogate, on the "
      "surrogate; (b) the same encoder grafted zero-shot onto the full target; (c) an encoder trained directly on "
      "the full target, same steps and samples. KL(target || surrogate) in nats/token: text on held-out chats, image "
      "at the answer positions of held-out image questions given (a)'s encoder. Hidden rel-L2: ||h_s - h_t|| / "
      "||h_t|| at the input of the last layer. Image/token norm: mean L2 norm of (a)'s image embeddings over that "
      "of the token embeddings. FLOPs saved: forward decoder FLOPs per token at T=4096 (the main job's "
      "figure; in brackets at T=64, the offline samples' length). "
      f"bar: b / c >= {GRAFT_BAR} and FLOPs saved (T=4096) >= {FLOPS_BAR:.0%}.", "",
      table(cells), ""])
  with open(path, "w") as f:
    f.write(text)
  return text


def _mean(r: dict, key: str) -> float:
  return r["accuracy"][key]["mean"] if key in r["accuracy"] else float("nan")


def _std(r: dict, key: str) -> float:
  return r["accuracy"][key]["std"] if key in r["accuracy"] else 0.0


def plot_vs_start(cells: Sequence[dict], path: str) -> None:
  """Accuracy of (a), (b), (c) and (c2) (the target-trained encoder read through the surrogate)
  against the range start, for the range-sweep cells."""
  sweep = sorted((r for r in cells if r["axis"] == "range start"), key=lambda r: r["range"][0])
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, label in (("surrogate", "(a) on the surrogate"), ("graft", "(b) grafted"), ("target", "(c) on the target"),
                     ("target_on_surrogate", "(c2) (c)'s encoder on the surrogate")):
    ax.errorbar([r["range"][0] for r in sweep], [_mean(r, key) for r in sweep], [_std(r, key) for r in sweep],
                fmt="o-", capsize=3, label=label)
  ax.set_xlabel("translator range start a (range [a, L-2])")
  ax.set_ylabel("held-out accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_vs_kl(cells: Sequence[dict], path: str) -> None:
  """Graft accuracy against text KL and image KL, every cell named."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key, label in ((axes[0], "text_kl", "KL(target || surrogate) on held-out text, nats/token"),
                         (axes[1], "image_kl", "KL at answer positions of image questions, nats/token")):
    points = [(r["fidelity"][key], _mean(r, "graft"), r["name"]) for r in cells if r["fidelity"].get(key) is not None]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    for x, y, name in points:
      ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel("graft accuracy (b)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_frontier(cells: Sequence[dict], path: str) -> None:
  """Graft accuracy against decoder FLOPs saved per token; the frontier is the best graft accuracy
  at each saving or more."""
  points = sorted(((r["flops_saved_per_token"], _mean(r, "graft"), r["name"]) for r in cells), reverse=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.scatter([p[0] for p in points], [p[1] for p in points])
  for x, y, name in points:
    ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
  best, frontier = -1.0, []
  for x, y, _ in points:
    if y > best:
      best = y
      frontier.append((x, y))
  ax.step([p[0] for p in frontier], [p[1] for p in frontier], where="post", color="C1", label="frontier")
  targets = [_mean(r, "target") for r in cells if "target" in r["accuracy"]]
  if targets:
    ax.axhline(GRAFT_BAR * float(np.mean(targets)), ls="--", color="gray", label=f"{GRAFT_BAR:.0%} of (c)")
  ax.axvline(FLOPS_BAR, ls=":", color="gray", label=f"{FLOPS_BAR:.0%} saved")
  ax.set_xlabel("decoder FLOPs saved per token (surrogate vs target)")
  ax.set_ylabel("graft accuracy (b)")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_report(out_dir: str, cells: Mapping[str, dict]) -> str:
  """table.md and the three plots under out_dir; returns the Markdown."""
  os.makedirs(out_dir, exist_ok=True)
  records = list(cells.values())
  plot_vs_start(records, os.path.join(out_dir, PLOTS[0]))
  plot_vs_kl(records, os.path.join(out_dir, PLOTS[1]))
  plot_frontier(records, os.path.join(out_dir, PLOTS[2]))
  return write_table(os.path.join(out_dir, "table.md"), cells)
