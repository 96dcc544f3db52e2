"""Scoring generated answers against references, pure Python (no model involved).

Rules, per record `kind`:

- "exact" (VQA / GQA / VizWiz exact match): `normalize_answer(prediction) ==
  normalize_answer(reference)`. `normalize_answer` follows the VQA eval: lower-case; commas inside
  numbers dropped ("1,000" -> "1000"); apostrophes dropped ("don't" -> "dont"); other punctuation
  -> space, except a "." between digits ("2.5"); number words "zero".."twenty" -> digits, and
  "none" -> "0" as VQA does; the articles a / an / the dropped; whitespace collapsed. So "Two." ==
  "2" and "The red circle!" == "red circle". A list reference counts if any entry matches (VQA's
  10-annotator soft score is not implemented). Exact records also report `contains` (below).
- "contains" (short free-form answers that models wrap in a sentence): the normalised reference
  occurs in the normalised prediction as whole words: "The circle is red." contains "red",
  "reddish" does not.
- "yesno" (POPE, method.md section 6): a prediction is "no" if it holds "no" or "not" as a word,
  case-insensitive ("Not really." -> no; "There is no cat, but yes a dog" -> no), else "yes". Taken
  literally, as in the paper: "isn't", "nope" or an empty answer count as "yes". Reported:
  accuracy, precision / recall / F1 with "yes" as the positive class, yes_ratio (share of
  predictions that are "yes") and the confusion counts.
- "choice" (MMBench / CV-Bench / SEED letter choice): the first option letter A-E in the
  prediction ("B", "(B)", "B.", "B) a cat", "The answer is B"); a leading "A" followed by a
  lower-case word is read as the article ("A red circle" holds no letter). A bare lower-case
  letter ("b", "(b).") counts too. If no letter is found and the record has `choices` (option
  texts in order A, B, ...), a prediction whose normalised text equals exactly one option picks
  it. The reference is a letter ("B", "(b)") or an index (1 -> "B").
"""
from __future__ import annotations

import collections
import re
from typing import Any, Iterable, Sequence

KINDS = ("exact", "contains", "yesno", "choice")
LETTERS = "ABCDE"

_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
_LETTER = re.compile(r"(?<![A-Za-z0-9'])[(\[]?([A-E])[)\].:]?(?![A-Za-z0-9'])")
_BARE_LETTER = re.compile(r"[(\[]?([A-Ea-e])[)\]]?[.:]?")


def normalize_answer(text: str) -> str:
  """VQA-style normalisation (see the module docstring)."""
  text = text.lower().strip()
  text = re.sub(r"(?<=\d),(?=\d)", "", text)
  text = text.replace("'", "").replace("\u2019", "")
  text = re.sub(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_", " ", text)
  words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
  return " ".join(words)


def _references(answer: Any) -> list[str]:
  answers = answer if isinstance(answer, (list, tuple)) else [answer]
  if not answers or not all(isinstance(a, (str, int, float)) for a in answers):
    raise ValueError(f"A reference must be a string, a number or a non-empty list of them, got {answer!r:.200}")
  return [normalize_answer(str(a)) for a in answers]


def exact_match(prediction: str, answer: Any) -> bool:
  """Normalised prediction equals the normalised reference (any of a list)."""
  pred = normalize_answer(prediction)
  return any(pred == ref for ref in _references(answer))


def contains_answer(prediction: str, answer: Any) -> bool:
  """The normalised reference (any of a list) occurs in the normalised prediction as whole words."""
  pred = f" {normalize_answer(prediction)} "
  return any(ref and f" {ref} " in pred for ref in _references(answer))


def yes_no(prediction: str) -> str:
  """The POPE answer rule: "no" if "no" or "not" is a word of the prediction, else "yes"."""
  words = re.findall(r"[a-z]+", prediction.lower())
  return "no" if "no" in words or "not" in words else "yes"


def extract_choice(prediction: str, choices: Sequence[str] | None = None) -> str | None:
  """The option letter A-E a prediction picks, or None (rules in the module docstring)."""
  text = prediction.strip()
  bare = _BARE_LETTER.fullmatch(text)
  if bare:
    return bare.group(1).upper()
  for m in _LETTER.finditer(text):
    if m.group(0) == "A" and re.match(r"\s+[a-z]", text[m.end():]):
      continue  # the article, as in "A red circle"
    return m.group(1)
  if choices:
    pred = normalize_answer(text)
    hits = [i for i, c in enumerate(choices[:len(LETTERS)]) if normalize_answer(str(c)) == pred]
    if len(hits) == 1:
      return LETTERS[hits[0]]
  return None


def reference_letter(answer: Any) -> str:
  """A choice reference as a letter: "B", "(b)", "B." or the index 1 -> "B"."""
  if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(LETTERS):
    return LETTERS[answer]
  bare = _BARE_LETTER.fullmatch(answer.strip()) if isinstance(answer, str) else None
  if not bare:
    raise ValueError(f"A choice reference must be a letter A-E or an index 0-4, got {answer!r:.200}")
  return bare.group(1).upper()


def yes_no_metrics(pairs: Iterable[tuple[str, str]]) -> dict[str, float | int]:
  """(predicted, reference) pairs of "yes"/"no" -> accuracy, precision, recall, f1 (yes is the
  positive class; 0.0 where undefined), yes_ratio and the confusion counts tp / fp / tn / fn."""
  counts = collections.Counter((p == "yes", r == "yes") for p, r in pairs)
  tp, fp, fn, tn = counts[True, True], counts[True, False], counts[False, True], counts[False, False]
  n = tp + fp + fn + tn
  div = lambda a, b: a / b if b else 0.0
  precision, recall = div(tp, tp + fp), div(tp, tp + fn)
  return {"n": n, "accuracy": div(tp + tn, n), "precision": precision, "recall": recall,
          "f1": div(2 * precision * recall, precision + recall), "yes_ratio": div(tp + fp, n),
          "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def score_sample(record: dict) -> dict[str, Any]:
  """One record {id, prediction, answer, kind, [choices]} -> {"correct": bool, "parsed": the
  answer as read (normalised text, "yes"/"no", a letter or None)}, plus "contains" for "exact"
  and "reference" ("yes"/"no") for "yesno"."""
  missing = [k for k in ("id", "prediction", "answer", "kind") if k not in record]
  if missing:
    raise ValueError(f"Record {record.get('id', '?')!r} lacks {missing}")
  kind, prediction, answer = record["kind"], record["prediction"], record["answer"]
  if not isinstance(prediction, str):
    raise ValueError(f"Record {record['id']!r}: prediction must be a string, got {type(prediction).__name__}")
  if kind == "exact":
    return {"correct": exact_match(prediction, answer), "parsed": normalize_answer(prediction),
            "contains": contains_answer(prediction, answer)}
  if kind == "contains":
    return {"correct": contains_answer(prediction, answer), "parsed": normalize_answer(prediction)}
  if kind == "yesno":
    reference = normalize_answer(str(answer))
    if reference not in ("yes", "no"):
      raise ValueError(f"Record {record['id']!r}: a yesno reference must be yes or no, got {answer!r:.200}")
    parsed = yes_no(prediction)
    return {"correct": parsed == reference, "parsed": parsed, "reference": reference}
  if kind == "choice":
    parsed = extract_choice(prediction, record.get("choices"))
    return {"correct": parsed == reference_letter(answer), "parsed": parsed}
  raise ValueError(f"Record {record['id']!r}: unknown kind {kind!r}; expected one of {KINDS}")


def _summary(scored: list[tuple[dict, dict]]) -> dict[str, Any]:
  out: dict[str, Any] = {"n": len(scored),
                         "accuracy": sum(s["correct"] for _, s in scored) / len(scored)}
  by_kind = collections.defaultdict(list)
  for record, score in scored:
    by_kind[record["kind"]].append(score)
  for kind, scores in by_kind.items():
    n = len(scores)
    if kind == "yesno":
      out[kind] = yes_no_metrics((s["parsed"], s["reference"]) for s in scores)
      continue
    out[kind] = {"n": n, "accuracy": sum(s["correct"] for s in scores) / n}
    if kind == "exact":
      out[kind]["contains"] = sum(s["contains"] for s in scores) / n
    if kind == "choice":
      out[kind]["unparsed"] = sum(s["parsed"] is None for s in scores)
  return out


def score_predictions(records: list[dict], group_by: Sequence[str] = ("question_type",)) -> dict[str, Any]:
  """Per-sample dicts {id, question_type, prediction, answer, kind} -> metrics.

  Returns {"overall": summary, "by_question_type": {type: summary}} (one "by_<key>" per key of
  `group_by`; a record without the key is grouped under "none"). A summary holds n, accuracy
  (each record scored by its kind's rule) and, per kind present, that kind's metrics: exact
  {n, accuracy, contains}, contains {n, accuracy}, yesno {yes_no_metrics}, choice {n, accuracy,
  unparsed}.
  """
  if not records:
    raise ValueError("No records to score")
  scored = [(r, score_sample(r)) for r in records]
  out: dict[str, Any] = {"overall": _summary(scored)}
  for key in group_by:
    groups = collections.defaultdict(list)
    for record, score in scored:
      value = record.get(key)
      groups["none" if value is None else str(value)].append((record, score))
    out[f"by_{key}"] = {name: _summary(groups[name]) for name in sorted(groups)}
  return out
