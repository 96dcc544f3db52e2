"""Multiple choice with lettered options -> evaluation entries ("choice": the answer's letter).

Accepted records (a JSON list, JSONL, or a TSV with a header row such as MMBench's):
  options   a "choices" / "options" list (CV-Bench, SEED-style exports), or columns "A".."E"
            (MMBench; empty or "nan" cells are absent options)
  answer    a letter ("B", "(B)") or an option index (1 -> "B")
  question  "question"; an optional "hint" is put before it (MMBench)
  image     a path under the image root, or the image itself in base64 (MMBench's TSV), which
            is written to `<image_dir>/<id>.<ext>`
  id        "id" / "question_id" / "index" / "idx" (else the record's position)
  group     "category" / "task" / "type" (else the benchmark name) -> question_type "<name>/<group>"
The question shown is `{hint}\\n{question}\\nA. {option A}\\nB. ...` then LLaVA's letter instruction.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import os

from PIL import Image

from graft_jax.data.converters.common import LETTER_ANSWER, eval_entry, image_path, read_records
from graft_jax.data.errors import DataFormatError
from graft_jax.evaluate.metrics import LETTERS, reference_letter

_ID_KEYS = ("id", "question_id", "index", "idx")
_GROUP_KEYS = ("category", "task", "type")


def _records(path: str) -> list[tuple[str, dict]]:
  if path.lower().endswith(".tsv"):
    with open(path, encoding="utf-8", newline="") as f:
      return [(f"{path}:{i + 2}", dict(row)) for i, row in enumerate(csv.DictReader(f, delimiter="\t"))]
  return read_records(path)


def _present(value) -> bool:
  return value is not None and str(value).strip() not in ("", "nan", "None")


def _options(record: dict, where: str) -> list[str]:
  listed = record.get("choices", record.get("options"))
  if isinstance(listed, list):
    options = [str(o) for o in listed]
  else:
    options = [str(record[k]) for k in LETTERS if _present(record.get(k))]
  if not 2 <= len(options) <= len(LETTERS):
    raise DataFormatError(f"{where}: expected 2-{len(LETTERS)} options in 'choices' or columns A-E, "
                          f"got {len(options)}")
  return options


def _image(record: dict, sample_id: str, image_root: str, image_dir: str, where: str, check: bool) -> str:
  """The image's path: a file under image_root, or base64 bytes written to image_dir."""
  value = str(record.get("image", ""))
  if not value:
    raise DataFormatError(f"{where}: no 'image'")
  candidate = os.path.join(image_root, value)
  if len(value) < 1024 and (os.path.isfile(candidate) or not check):
    return image_path(image_root, value, where, check)
  try:
    data = base64.b64decode(value, validate=True)
    with Image.open(io.BytesIO(data)) as img:
      ext = (img.format or "png").lower()
  except (binascii.Error, ValueError, OSError):
    return image_path(image_root, value, where, check)  # neither a file nor base64: name the path
  os.makedirs(image_dir, exist_ok=True)
  path = os.path.abspath(os.path.join(image_dir, f"{sample_id}.{ext}"))
  with open(path, "wb") as f:
    f.write(data)
  return path


def convert_choice(path: str, image_root: str, *, name: str | None = None, image_dir: str | None = None,
                   instruction: str = LETTER_ANSWER, check_images: bool = True) -> list[dict]:
  """Evaluation entries of a multiple-choice file (module docstring). name: the benchmark (default
  the file's stem); image_dir: where base64 images go (default <file dir>/<name>_images)."""
  name = name or os.path.splitext(os.path.basename(path))[0]
  image_dir = image_dir or os.path.join(os.path.dirname(os.path.abspath(path)), f"{name}_images")
  entries = []
  for i, (where, r) in enumerate(_records(path)):
    if not _present(r.get("question")) or not _present(r.get("answer")):
      raise DataFormatError(f"{where}: needs 'question' and 'answer'; has {sorted(r)}")
    sample_id = next((str(r[k]) for k in _ID_KEYS if _present(r.get(k))), str(i))
    options = _options(r, where)
    answer = r["answer"]
    answer = int(answer) if isinstance(answer, str) and answer.strip().isdigit() else answer
    try:
      letter = reference_letter(answer)
    except ValueError as e:
      raise DataFormatError(f"{where}: {e}") from None
    if LETTERS.index(letter) >= len(options):
      raise DataFormatError(f"{where}: answer {letter} but only {len(options)} options")
    lines = [str(r["hint"])] if _present(r.get("hint")) else []
    lines += [str(r["question"])] + [f"{LETTERS[j]}. {o}" for j, o in enumerate(options)]
    group = next((str(r[k]) for k in _GROUP_KEYS if _present(r.get(k))), None)
    image = _image(r, sample_id, image_root, image_dir, where, check_images)
    entries.append(eval_entry(f"{name}/{sample_id}", image, "\n".join(lines) + instruction, letter,
                              f"{name}/{group}" if group else name, "choice", choices=options))
  return entries
