"""VQAv2 and GQA -> evaluation entries (exact match after VQA normalisation).

VQAv2: a questions file {"data_subtype": "val2014", "questions": [{"image_id", "question",
"question_id"}]} and an annotations file {"annotations": [{"question_id", "answer_type",
"multiple_choice_answer", "answers": [{"answer", ...} x 10]}]}; images are
COCO_<data_subtype>_<image_id:012d>.jpg. The reference answers are those at least 3 of the 10
annotators gave (VQA accuracy counts such an answer fully; the soft credit for 1-2 matches is
not scored), else the consensus `multiple_choice_answer`; all ten stay in "answers". Grouped by
answer type (yes/no, number, other).

GQA: a questions file {question_id: {"imageId", "question", "answer", "types": {"structural"}, ...}}
(e.g. testdev_balanced_questions.json); images are <imageId>.jpg. Grouped by structural type.
"""
from __future__ import annotations

import collections

from graft_jax.data.converters.common import SHORT_ANSWER, eval_entry, image_path, read_json, require
from graft_jax.data.errors import DataFormatError
from graft_jax.evaluate.metrics import normalize_answer


def _consensus(answers: list[str], fallback: str) -> list[str]:
  """Answers (as first written) whose normalised form at least 3 annotators gave; else [fallback]."""
  counts = collections.Counter(normalize_answer(a) for a in answers)
  kept, seen = [], set()
  for a in answers:
    key = normalize_answer(a)
    if counts[key] >= 3 and key not in seen:
      kept.append(a)
      seen.add(key)
  return kept or [fallback]


def convert_vqav2(questions_path: str, annotations_path: str, image_root: str, *,
                  instruction: str = SHORT_ANSWER, check_images: bool = True) -> list[dict]:
  """Evaluation entries of a VQAv2 split (questions + annotations), images under `image_root`."""
  questions, annotations = read_json(questions_path), read_json(annotations_path)
  for path, data, key in ((questions_path, questions, "questions"), (annotations_path, annotations, "annotations")):
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
      raise DataFormatError(f"{path}: expected an object with a {key!r} list")
  subtype = questions.get("data_subtype", "val2014")
  by_id = {}
  for i, a in enumerate(annotations["annotations"]):
    require(a, ("question_id", "answers", "multiple_choice_answer"), f"{annotations_path} annotation {i}")
    by_id[a["question_id"]] = a
  entries = []
  for i, q in enumerate(questions["questions"]):
    where = f"{questions_path} question {i}"
    require(q, ("question_id", "image_id", "question"), where)
    a = by_id.get(q["question_id"])
    if a is None:
      raise DataFormatError(f"{where}: question_id {q['question_id']} has no annotation in {annotations_path}")
    answers = [str(x["answer"]) for x in a["answers"]]
    image = image_path(image_root, f"COCO_{subtype}_{int(q['image_id']):012d}.jpg", where, check_images)
    entries.append(eval_entry(q["question_id"], image, f"{q['question']}{instruction}",
                              _consensus(answers, str(a["multiple_choice_answer"])),
                              str(a.get("answer_type", "vqav2")), "exact", answers=answers))
  return entries


def convert_gqa(questions_path: str, image_root: str, *, instruction: str = SHORT_ANSWER,
                check_images: bool = True) -> list[dict]:
  """Evaluation entries of a GQA questions file, images (<imageId>.jpg) under `image_root`."""
  questions = read_json(questions_path)
  if not isinstance(questions, dict):
    raise DataFormatError(f"{questions_path}: expected an object {{question_id: question}}")
  entries = []
  for qid, q in questions.items():
    where = f"{questions_path} question {qid}"
    if not isinstance(q, dict):
      raise DataFormatError(f"{where}: expected an object, got {type(q).__name__}")
    require(q, ("imageId", "question", "answer"), where)
    kind = (q.get("types") or {}).get("structural") or "gqa"
    image = image_path(image_root, f"{q['imageId']}.jpg", where, check_images)
    entries.append(eval_entry(qid, image, f"{q['question']}{instruction}", str(q["answer"]), str(kind), "exact"))
  return entries
