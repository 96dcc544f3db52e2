"""POPE -> evaluation entries.

POPE ships one JSONL file per sampling setting (coco_pope_adversarial.json, _popular, _random),
one object per line: {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
"text": "Is there a snowboard in the image?", "label": "yes"}. The setting comes from a
"category" field when present (lmms-eval's copy), else from the file name. Scored with the POPE
rule ("no" if the answer holds "no" or "not"); the report groups by `pope_<setting>`, whose
accuracy and F1 the paper averages.
"""
from __future__ import annotations

import os
from typing import Sequence

from graft_jax.data.converters.common import SHORT_ANSWER, eval_entry, image_path, read_records, require
from graft_jax.data.errors import DataFormatError

SETTINGS = ("adversarial", "popular", "random")


def setting_of(path: str, record: dict) -> str:
  """The sampling setting of a POPE record: its "category", else the one its file is named after."""
  if record.get("category"):
    return str(record["category"])
  stem = os.path.splitext(os.path.basename(path))[0].lower()
  return next((s for s in SETTINGS if s in stem), stem)


def convert_pope(paths: Sequence[str], image_root: str, *, instruction: str = SHORT_ANSWER,
                 check_images: bool = True) -> list[dict]:
  """Evaluation entries (converters/common.py) of the POPE files `paths`, images under `image_root`."""
  entries = []
  for path in paths:
    for where, r in read_records(path):
      require(r, ("question_id", "image", "text", "label"), where)
      label = str(r["label"]).strip().lower()
      if label not in ("yes", "no"):
        raise DataFormatError(f"{where}: label must be 'yes' or 'no', got {r['label']!r}")
      setting = setting_of(path, r)
      entries.append(eval_entry(f"{setting}/{r['question_id']}", image_path(image_root, r["image"], where, check_images),
                                f"{r['text']}{instruction}", label, f"pope_{setting}", "yesno"))
  return entries
