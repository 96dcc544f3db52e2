"""Evaluation outputs: per-sample JSONL, results JSON and a Markdown table comparing models.

`write_report(out_dir, {"encoder on surrogate": results, "grafted": results}, samples)` writes

  out_dir/results.json             {model: results}
  out_dir/results.md               one row per metric, one column per model
  out_dir/samples/<model>.jsonl    per-sample outputs (model names slugged: "grafted_llama_8b")

Nested results are flattened with "/" for the table ("overall/yesno/f1").
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from graft_jax.data.errors import DataFormatError


def _default(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"Not JSON serialisable: {type(x).__name__}")


def write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
  """One JSON object per line (numpy scalars and arrays converted)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False, default=_default) + "\n")


def iter_jsonl(path: str) -> Iterator[tuple[int, dict]]:
  """(line number, object) per non-blank line; DataFormatError naming file:line for a line that
  is not valid JSON or not an object."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No JSONL file at {path!r}")
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from e
      if not isinstance(obj, dict):
        raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
      yield lineno, obj


def read_jsonl(path: str) -> list[dict]:
  """All objects of a JSONL file (see iter_jsonl for errors)."""
  return [obj for _, obj in iter_jsonl(path)]


def write_json(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False, default=_default)
    f.write("\n")


def flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"overall": {"yesno": {"f1": x}}} -> {"overall/yesno/f1": x}; only numbers and strings kept."""
  out: dict[str, Any] = {}
  for key, value in results.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, name + "/"))
    elif isinstance(value, (int, float, str, np.generic)) and not isinstance(value, bool):
      out[name] = value.item() if isinstance(value, np.generic) else value
  return out


def _cell(value: Any, float_format: str) -> str:
  if value is None:
    return "-"
  text = float_format.format(value) if isinstance(value, float) else str(value)
  return text.replace("|", "\\|")


def markdown_table(results_by_model: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] | None = None,
                   models_as: str = "columns", float_format: str = "{:.4f}") -> str:
  """A Markdown table of several models' results. metrics: flattened names to show (default:
  every number or string any model has, in order of first appearance); "-" where a model lacks
  one. models_as: "columns" (a row per metric) or "rows" (a row per model)."""
  if models_as not in ("columns", "rows"):
    raise ValueError(f"models_as must be 'columns' or 'rows', got {models_as!r}")
  flat = {model: flatten(r) for model, r in results_by_model.items()}
  if metrics is None:
    metrics = list(dict.fromkeys(k for f in flat.values() for k in f))
  models = list(flat)
  if models_as == "columns":
    header = ["metric", *models]
    rows = [[m, *(_cell(flat[model].get(m), float_format) for model in models)] for m in metrics]
  else:
    header = ["model", *metrics]
    rows = [[model, *(_cell(flat[model].get(m), float_format) for m in metrics)] for model in models]
  header = [_cell(h, float_format) for h in header]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def slug(name: str) -> str:
  """A file-name-safe version of a model name: "Grafted (Llama-8B)" -> "grafted_llama_8b"."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "model"


def write_report(out_dir: str, results_by_model: Mapping[str, Mapping[str, Any]],
                 samples_by_model: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
                 metrics: Sequence[str] | None = None, models_as: str = "columns") -> dict[str, str]:
  """Writes results.json, results.md and samples/<slug>.jsonl; returns {what: path}."""
  paths = {"json": os.path.join(out_dir, "results.json"), "markdown": os.path.join(out_dir, "results.md")}
  write_json(paths["json"], dict(results_by_model))
  table = markdown_table(results_by_model, metrics, models_as)
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write(table)
  slugs = [slug(m) for m in (samples_by_model or {})]
  if len(set(slugs)) != len(slugs):
    raise ValueError(f"Model names collide as file names: {list(samples_by_model)} -> {slugs}")
  for model, rows in (samples_by_model or {}).items():
    paths[f"samples/{model}"] = os.path.join(out_dir, "samples", f"{slug(model)}.jsonl")
    write_jsonl(paths[f"samples/{model}"], rows)
  return paths
