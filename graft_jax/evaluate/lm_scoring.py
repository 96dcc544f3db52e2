"""Scoring text with a decoder (target or surrogate): perplexity and lm-eval-style multiple choice.

Perplexity JSONL, one record a line:
  {"text": str}: tokenised without special tokens after one prefix token (the tokenizer's BOS,
    else its EOS, as lm-eval's rolling log-likelihood does), so every text token is scored.
  {"messages": [{"role", "content"}, ...]}: encoded with the chat template in "standard" mode;
    only the assistant tokens that mode supervises are scored (header newline, content, end of
    turn; see graft_jax/data/templates.py). Image markers are refused (this is text-only scoring).
  perplexity = exp(NLL averaged over every scored token of the file), tokens pooled.

Multiple-choice JSONL: {"context": str, "choices": [str, ...], "label": int}, as lm-eval-harness
requests it. Each choice is a continuation appended verbatim to the context, so give it its
separator (" Paris"); trailing whitespace of the context moves onto the continuation, the
continuation's tokens are those of tokenize(context + choice) past len(tokenize(context)), and an
empty context becomes the prefix token (lm-eval's `_encode_pair`). loglikelihood = sum of the
continuation tokens' log-probs; acc: argmax loglikelihood == label; acc_norm: argmax of
loglikelihood / len(choice) in characters == label. Ties go to the first choice, as np.argmax.

Sequences are sorted by length and run in fixed batches, right-padded to power-of-two length
buckets (at least `min_len`), so jit compiles a few shapes.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.data.errors import DataFormatError, SampleError
from graft_jax.data.padding import right_pad
from graft_jax.data.templates import ChatTemplate, check_conversation, encode_conversation
from graft_jax.evaluate.report import iter_jsonl
from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.llama import Decoder


@functools.partial(jax.jit, static_argnames=("config", "segments"))
def token_logprobs(params: dict, tokens: jnp.ndarray, mask: jnp.ndarray, *, config: LlamaConfig,
                   segments: Segments | None = None) -> jnp.ndarray:
  """log p(tokens[b, t] | tokens[b, :t]): float32[B, T], 0 at t = 0.

  tokens: int32[B, T] right-padded; mask: bool[B, T] real tokens.
  """
  logits = Decoder(config, segments).apply({"params": params}, tokens, attention_mask=mask)[0]
  logits = logits[:, :-1].astype(jnp.float32)
  # target logit minus logsumexp: no second [B, T, V] array as log_softmax would make
  picked = jnp.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]
  return jnp.pad(picked - jax.nn.logsumexp(logits, axis=-1), ((0, 0), (1, 0)))


def _bucket(length: int, min_len: int) -> int:
  return max(min_len, 1 << (length - 1).bit_length())


def score_sequences(params: dict, config: LlamaConfig, sequences: Sequence[tuple[np.ndarray, np.ndarray]], *,
                    segments: Segments | None = None, batch_size: int = 8, pad_id: int | None = None,
                    min_len: int = 32) -> list[np.ndarray]:
  """Per sequence (ids int[T], scored bool[T], scored[0] False) -> float64[n_scored], the
  log-probs of ids[t] at the scored positions. params: a decoder tree, or a VLM tree's "llm"."""
  params = params["llm"] if "llm" in params else params
  pad_id = pad_id if pad_id is not None else (config.pad_token_id or 0)
  for ids, scored in sequences:
    if len(ids) == 0 or len(ids) != len(scored) or scored[0]:
      raise ValueError("Each sequence needs >= 1 token, a mask of its length, and no score at position 0")
  order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
  out: list[np.ndarray] = [np.zeros(0)] * len(sequences)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    rows = [np.asarray(sequences[i][0], np.int32) for i in chunk]
    width = _bucket(max(len(r) for r in rows), min_len)
    rows += [np.full(1, pad_id, np.int32)] * (batch_size - len(rows))  # keep the batch shape fixed
    ids, mask = right_pad(rows, pad_id, width)
    logp = np.asarray(token_logprobs(params, jnp.asarray(ids), jnp.asarray(mask), config=config,
                                     segments=segments))
    for row, i in enumerate(chunk):
      seq_ids, scored = sequences[i]
      out[i] = logp[row, :len(seq_ids)][np.asarray(scored, bool)].astype(np.float64)
  return out


def _encode(tokenizer, text: str, add_special_tokens: bool = False) -> list[int]:
  return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def _prefix_id(tokenizer) -> int:
  for name in ("bos_token_id", "eos_token_id"):
    if getattr(tokenizer, name, None) is not None:
      return int(getattr(tokenizer, name))
  raise ValueError("The tokenizer has neither a BOS nor an EOS token to start a sequence with")


def _require(record: dict, key: str, kind: type, where: str) -> Any:
  if key not in record:
    raise DataFormatError(f"{where}: missing field {key!r}")
  if not isinstance(record[key], kind) or isinstance(record[key], bool):
    raise DataFormatError(f"{where}: field {key!r} must be {kind.__name__}, got {type(record[key]).__name__}")
  return record[key]


def _perplexity_sequence(record: dict, tokenizer, template, where: str) -> tuple[np.ndarray, np.ndarray]:
  if ("text" in record) == ("messages" in record):
    raise DataFormatError(f"{where}: a record needs exactly one of 'text' or 'messages'")
  if "text" in record:
    ids = [_prefix_id(tokenizer)] + _encode(tokenizer, _require(record, "text", str, where))
    scored = np.arange(len(ids)) > 0
  else:
    if template is None:
      raise ValueError(f"{where}: chat records need a chat template (template='chatml' or 'llama3')")
    messages = _require(record, "messages", list, where)
    try:
      if "image" in record or check_conversation(messages) >= 0:
        raise DataFormatError(f"{where}: an image in a text-only scoring file")
      sample = encode_conversation(messages, tokenizer, template, "standard")
    except SampleError as e:
      raise DataFormatError(f"{where}: {e}") from e
    ids, scored = sample.ids, sample.loss_mask
  if not np.any(scored):
    raise DataFormatError(f"{where}: no tokens to score")
  return np.asarray(ids, np.int32), np.asarray(scored, bool)


def perplexity(params: dict, config: LlamaConfig, tokenizer, path: str, *, segments: Segments | None = None,
               template: str | ChatTemplate | None = None, batch_size: int = 8
               ) -> tuple[dict[str, float | int], list[dict[str, Any]]]:
  """Perplexity of a JSONL of text or chat records (module docstring).

  Returns ({"perplexity", "nll" (mean per scored token), "tokens", "samples"},
           per sample [{"line", "tokens", "nll"}]).
  """
  lines, sequences = [], []
  for lineno, record in iter_jsonl(path):
    lines.append(lineno)
    sequences.append(_perplexity_sequence(record, tokenizer, template, f"{path}:{lineno}"))
  if not sequences:
    raise DataFormatError(f"{path}: no records")
  logps = score_sequences(params, config, sequences, segments=segments, batch_size=batch_size)
  per_sample = [{"line": line, "tokens": len(lp), "nll": float(-lp.mean())} for line, lp in zip(lines, logps)]
  tokens = sum(len(lp) for lp in logps)
  nll = float(-sum(lp.sum() for lp in logps) / tokens)
  return {"perplexity": math.exp(nll), "nll": nll, "tokens": tokens, "samples": len(sequences)}, per_sample


def encode_pair(tokenizer, context: str, continuation: str, add_special_tokens: bool = False
                ) -> tuple[list[int], list[int]]:
  """(context ids, continuation ids) the way lm-eval-harness splits a request."""
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
  if not context:
    return [_prefix_id(tokenizer)], _encode(tokenizer, continuation)
  whole = _encode(tokenizer, context + continuation, add_special_tokens)
  context_ids = _encode(tokenizer, context, add_special_tokens)
  return context_ids, whole[len(context_ids):]


def _argmax_norm(loglikelihoods: Sequence[float], choices: Sequence[str]) -> int:
  return int(np.argmax(np.asarray(loglikelihoods) / [max(len(c), 1) for c in choices]))


def choice_metrics(loglikelihoods: Sequence[Sequence[float]], choices: Sequence[Sequence[str]],
                   labels: Sequence[int]) -> dict[str, float | int]:
  """Per question the choices' log-likelihoods and texts, and the label -> {n, accuracy, acc_norm}."""
  acc = [int(np.argmax(ll)) == y for ll, y in zip(loglikelihoods, labels)]
  norm = [_argmax_norm(ll, ch) == y for ll, ch, y in zip(loglikelihoods, choices, labels)]
  return {"n": len(acc), "accuracy": float(np.mean(acc)), "acc_norm": float(np.mean(norm))}


def _choice_record(record: dict, where: str) -> tuple[str, list[str], int]:
  context = _require(record, "context", str, where)
  choices = _require(record, "choices", list, where)
  label = _require(record, "label", int, where)
  if not choices or not all(isinstance(c, str) and c for c in choices):
    raise DataFormatError(f"{where}: 'choices' must be a non-empty list of non-empty strings")
  if not 0 <= label < len(choices):
    raise DataFormatError(f"{where}: label {label} is out of range for {len(choices)} choices")
  return context, choices, label


def multiple_choice(params: dict, config: LlamaConfig, tokenizer, path: str, *, segments: Segments | None = None,
                    batch_size: int = 8, add_special_tokens: bool = False
                    ) -> tuple[dict[str, float | int], list[dict[str, Any]]]:
  """lm-eval-style multiple choice on a JSONL of {context, choices, label} (module docstring).

  Returns ({"n", "accuracy", "acc_norm"}, per question [{"line", "label", "loglikelihoods",
  "prediction", "prediction_norm"}]).
  """
  questions, sequences = [], []
  for lineno, record in iter_jsonl(path):
    where = f"{path}:{lineno}"
    context, choices, label = _choice_record(record, where)
    for choice in choices:
      context_ids, continuation = encode_pair(tokenizer, context, choice, add_special_tokens)
      if not continuation:
        raise DataFormatError(f"{where}: choice {choice!r:.80} adds no tokens to the context")
      ids = np.asarray(context_ids + continuation, np.int32)
      sequences.append((ids, np.arange(len(ids)) >= len(context_ids)))
    questions.append((lineno, choices, label))
  if not questions:
    raise DataFormatError(f"{path}: no records")
  sums = iter([float(lp.sum()) for lp in score_sequences(params, config, sequences, segments=segments,
                                                         batch_size=batch_size)])
  lls = [[next(sums) for _ in choices] for _, choices, _ in questions]
  per_question = [
      {"line": line, "label": label, "loglikelihoods": ll, "prediction": int(np.argmax(ll)),
       "prediction_norm": _argmax_norm(ll, choices)}
      for (line, choices, label), ll in zip(questions, lls)]
  metrics = choice_metrics(lls, [c for _, c, _ in questions], [y for _, _, y in questions])
  return metrics, per_question
