"""Scoring an encoder on a decoder, and the training compute of a run, for the reproduction."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from graft_jax.cost import decoder_cost
from graft_jax.data.readers import Sample
from graft_jax.evaluate.vqa_eval import evaluate_samples
from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.vlm import VLM
from graft_jax.train.metrics import read_metrics


@dataclasses.dataclass
class Scorer:
  """Greedy answers of a VLM to the held-out questions, scored per question type."""
  samples: Sequence[Sample]
  tokenizer: object
  template: str
  llm_config: LlamaConfig
  vit: object            # VitConfig
  projector_depth: int
  eos_ids: Sequence[int]
  batch_size: int = 32
  max_new_tokens: int = 6

  def __call__(self, encoder: dict, llm: dict, segments: Segments | None) -> tuple[dict, list[dict]]:
    """encoder {"img", "proj"}, llm: decoder params laid out as `segments` (None: the full
    target) -> (scores: overall and by_question_type, per-sample records)."""
    model = VLM(self.vit, self.llm_config, segments, self.projector_depth)
    return evaluate_samples(model, {**encoder, "llm": llm}, self.samples, self.tokenizer, self.template,
                            batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                            eos_ids=self.eos_ids, pad_id=self.llm_config.pad_token_id or 0)


def train_flops_per_token(llm_config: LlamaConfig, segments: Segments | None, decoder_trains: bool,
                          seq_len: int) -> float:
  """Decoder FLOPs per token of one training step: forward (2N + attention) and the backward pass
  to the activations (the same again; frozen weights need no weight gradient), plus the weight
  gradients (once more) when the decoder trains: 4N or 6N per token. The encoder (~1% here) is left
  out; it is the same in every condition."""
  fwd = decoder_cost(llm_config, segments, seq_len=seq_len).fwd_flops_per_token
  return fwd * (3.0 if decoder_trains else 2.0)


@dataclasses.dataclass(frozen=True)
class RunCompute:
  """What a finished run cost: steps, tokens the decoder saw, decoder FLOPs and wall-clock."""
  steps: int
  tokens: float
  flops: float
  seconds: float

  def __add__(self, other: "RunCompute") -> "RunCompute":
    return RunCompute(self.steps + other.steps, self.tokens + other.tokens, self.flops + other.flops,
                      self.seconds + other.seconds)


ZERO = RunCompute(0, 0.0, 0.0, 0.0)


def run_compute(run_dir: str, flops_per_token: float | Sequence[float], upto_step: int | None = None) -> RunCompute:
  """Tokens (image + text positions) and step times from a run's metrics.jsonl, up to a step.
  flops_per_token: one cost, or one per surrogate of a mix (train/mix.py), indexed by each step's
  `surrogate` metric."""
  records = [r for r in read_metrics(run_dir) if upto_step is None or r["step"] <= upto_step]
  costs = [float(flops_per_token)] if np.ndim(flops_per_token) == 0 else [float(f) for f in flops_per_token]
  tokens = [float(r["tokens/image"] + r["tokens/text"]) for r in records]
  flops = sum(t * costs[int(r.get("surrogate", 0))] for t, r in zip(tokens, records))
  seconds = float(sum(r.get("step_time_s", 0.0) for r in records))
  return RunCompute(len(records), sum(tokens), flops, seconds)


def mean_and_spread(values: Sequence[float]) -> dict[str, float]:
  """Mean, sample standard deviation (0 for one value), min and max."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
