"""The evaluation file format and the small readers the converters share.

An evaluation file is a LLaVA JSON list (graft_jax/data/readers.py reads it; graft_jax/evaluate
answers and scores it). One entry per question:

  {"id": str, "image": absolute path,
   "conversations": [{"from": "human", "value": "<image>\\n{question}{instruction}"},
                     {"from": "gpt", "value": the reference answer (the first, for lists)}],
   "answer": str | [str, ...] (any of a list counts) | letter,
   "question_type": a group of the report (e.g. "pope_adversarial", "number", "mmbench"),
   "kind": "yesno" | "exact" | "contains" | "choice" (graft_jax/evaluate/metrics.py),
   ["choices": [option texts, A first]], [other fields of the source record]}

The instructions are LLaVA-1.5's evaluation prompts (short answers; option letters).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

from graft_jax.data.errors import DataFormatError

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."


def eval_entry(sample_id: Any, image: str, question: str, answer: Any, question_type: str, kind: str,
               **extra: Any) -> dict[str, Any]:
  """One evaluation entry (module docstring); `question` already carries its instruction."""
  first = answer[0] if isinstance(answer, (list, tuple)) else answer
  return {"id": str(sample_id), "image": image,
          "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                            {"from": "gpt", "value": str(first)}],
          "answer": answer, "question_type": question_type, "kind": kind, **extra}


def image_path(image_root: str, name: str, where: str, check: bool = True) -> str:
  """The absolute path of image `name` under `image_root`; FileNotFoundError naming `where`."""
  path = os.path.abspath(os.path.join(image_root, name))
  if check and not os.path.isfile(path):
    raise FileNotFoundError(f"{where}: no image file at {path!r} (image root {image_root!r})")
  return path


def read_json(path: str) -> Any:
  """A JSON file; DataFormatError naming file, line and column when it is malformed."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No file at {path!r}")
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise DataFormatError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from e


def read_records(path: str) -> list[tuple[str, dict]]:
  """(where, record) for a JSON list of objects or a JSONL file (POPE's .json files are JSONL)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No file at {path!r}")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    data = None
  if isinstance(data, list):
    items = [(f"{path} entry {i}", r) for i, r in enumerate(data)]
  elif isinstance(data, dict):  # a single-line JSONL file
    items = [(f"{path}:1", data)]
  else:
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          items.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
          raise DataFormatError(f"{path}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from e
  for where, record in items:
    if not isinstance(record, dict):
      raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
  return items


def require(record: dict, keys: Sequence[str], where: str) -> None:
  """DataFormatError naming `where` and the missing keys of `record`."""
  missing = [k for k in keys if k not in record]
  if missing:
    raise DataFormatError(f"{where}: missing field(s) {missing}; has {sorted(record)}")


def write_json(path: str, entries: Iterable[dict]) -> int:
  """Writes a JSON list; returns the number of entries."""
  entries = list(entries)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(entries, f, ensure_ascii=False, indent=0)
  return len(entries)
