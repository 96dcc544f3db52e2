"""A blind floor for the reproduction: the training split's answer prior, no image at all.

The untrained encoder (e) scores the decoder's reaction to noise, which is below what a model that
has learnt only the answer *format* gets without looking: the most frequent answer per question
type (and, for a question that names its options, e.g. "on the right or on the left?", the more
frequent of those). An encoder has learnt to see only where it beats this floor.
"""
from __future__ import annotations

import collections
import re
from typing import Sequence

from graft_jax.data.readers import Sample
from graft_jax.evaluate.metrics import score_predictions
from graft_jax.evaluate.vqa_eval import reference_answer, score_kind


def _words(text: str) -> set[str]:
  return set(re.findall(r"[a-z0-9]+", text.lower()))


def _answer(sample: Sample) -> str:
  answer = reference_answer(sample)
  return str(answer[0] if isinstance(answer, list) else answer).strip().lower()


def prior_answers(train: Sequence[Sample], test: Sequence[Sample]) -> list[str]:
  """For every test sample, its type's most frequent training answer, among the answers its
  question names when it names any (ties: the answer seen first in training)."""
  counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for s in train:
    counts[str(s.extra.get("question_type", "default"))][_answer(s)] += 1
  out = []
  for s in test:
    seen = counts.get(str(s.extra.get("question_type", "default")))
    if not seen:
      out.append("")
      continue
    named = [a for a in seen if a in _words(s.conversation[0]["content"])]
    pool = named or list(seen)
    out.append(max(pool, key=lambda a: seen[a]))
  return out


def answer_prior_scores(train: Sequence[Sample], test: Sequence[Sample]) -> tuple[dict, list[dict]]:
  """(scores overall and per question type, records) of `prior_answers`, scored like the models."""
  records = [{"id": s.id, "question_type": str(s.extra.get("question_type", "default")),
              "question": s.conversation[0]["content"], "prediction": p, "answer": reference_answer(s),
              "kind": str(s.extra.get("kind") or score_kind(str(s.extra.get("question_type", "default"))))}
             for s, p in zip(test, prior_answers(train, test))]
  return score_predictions(records), records
