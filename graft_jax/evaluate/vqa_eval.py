"""Answer a LLaVA-format evaluation file with a VLM and score the answers.

Each sample's first user turn is the question (its image prompt is the first phrase, as at
evaluation in the reference); the reference answer is the sample's `answer` field when present
(graft_jax's synthetic sets), else the first assistant turn. How an answer is scored comes from
its question type: yes/no questions with the POPE rule, the rest by exact match after VQA
normalisation (the default sets are answered in one or two words).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graft_jax.data.images import preprocess_image
from graft_jax.data.readers import Sample
from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.metrics import score_predictions
from graft_jax.evaluate.vlm_generation import generate_vlm
from graft_jax.models.vlm import VLM

YES_NO_TYPES = ("exists", "yes/no", "pope")


def reference_answer(sample: Sample) -> str | list[str]:
  answer = sample.extra.get("answer")
  if isinstance(answer, list):  # several accepted answers (VQAv2): any of them counts
    return [str(a) for a in answer]
  return str(answer) if answer is not None else sample.conversation[1]["content"]


def score_kind(question_type: str) -> str:
  return "yesno" if question_type in YES_NO_TYPES else "exact"


def answer_samples(model: VLM, params: dict, samples: Sequence[Sample], tokenizer, template: str, *,
                   batch_size: int, max_new_tokens: int, eos_ids: Sequence[int], pad_id: int) -> list[str]:
  """Greedy answers to each sample's first question, in order."""
  answers = []
  size = model.vit.image_size
  for i in range(0, len(samples), batch_size):
    chunk = samples[i:i + batch_size]
    prompts = [encode_conversation(s.conversation[:1], tokenizer, template, "standard",
                                   add_generation_prompt=True) for s in chunk]
    images = np.stack([preprocess_image(s.image, size) if s.image else np.zeros((size, size, 3), np.float32)
                       for s in chunk])
    outs = generate_vlm(model, params, prompts, images, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                        pad_id=pad_id)
    answers += [tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]
  return answers


def evaluate_samples(model: VLM, params: dict, samples: Sequence[Sample], tokenizer, template: str,
                     **generation) -> tuple[dict, list[dict]]:
  """(scores overall and per question type, per-sample records)."""
  predictions = answer_samples(model, params, samples, tokenizer, template, **generation)
  records = []
  for sample, prediction in zip(samples, predictions):
    question_type = str(sample.extra.get("question_type", "default"))
    records.append({"id": sample.id, "question_type": question_type, "question": sample.conversation[0]["content"],
                    "prediction": prediction, "answer": reference_answer(sample),
                    # a file may name its scoring rule and options (graft_jax/data/converters)
                    "kind": str(sample.extra.get("kind") or score_kind(question_type)),
                    **({"choices": sample.extra["choices"]} if "choices" in sample.extra else {})})
  return score_predictions(records), records
