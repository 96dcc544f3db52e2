"""Prediction trajectory (method.md section 3): how each layer's logit lens approaches the output.

For a sample with tokens t[0..N-1] and a layer l, the hidden state after l goes through the final
norm and the LM head; a_l[i] is the probability of the true next token t[i+1]. The layer's score is
KL(q_l || p) with q_l = a_l / sum(a_l), p the same for the last layer, both clamped at 1e-6
(position-normalised KL). The full-vocabulary variant is the mean over positions of
KL(final distribution || layer's logit-lens distribution).

The transition point is found by a two-phase least-squares fit of the mean score curve (see
`find_transition`); the suggested translator range starts just after it and ends at L-2.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import Decoder

CLAMP = 1e-6


@dataclasses.dataclass
class LayerReadout:
  """true_prob, full_kl: float32[L, B, N-1]; valid: bool[B, N-1] (real target positions)."""
  true_prob: np.ndarray
  full_kl: np.ndarray
  valid: np.ndarray


def layer_readout(params: dict, config: LlamaConfig, tokens: np.ndarray, mask: np.ndarray) -> LayerReadout:
  """Logit-lens readout of every layer for right-padded tokens int[B, N] with mask bool[B, N]."""
  fn = _readout_fn(config)
  true_prob, full_kl = fn(params, jnp.asarray(tokens), jnp.asarray(mask))
  valid = mask[:, 1:] & mask[:, :-1]
  return LayerReadout(np.asarray(true_prob), np.asarray(full_kl), np.asarray(valid))


def _readout_fn(config: LlamaConfig):
  model = Decoder(config, collect_hidden=True)

  @jax.jit
  def fn(params, tokens, mask):
    _, _, hidden = model.apply({"params": params}, tokens, attention_mask=mask)  # [L, B, N, D]
    targets = tokens[:, 1:]

    def lens(h):  # one layer at a time, so [B, N, V] logits exist for a single layer only
      normed = model.apply({"params": params}, h, method=lambda m, x: m.final_norm(x))
      logp = jax.nn.log_softmax(
          model.apply({"params": params}, normed, method=Decoder.logits).astype(jnp.float32), -1)
      return logp[:, :-1]

    final_logp = lens(hidden[-1])

    def per_layer(h):
      logp = lens(h)
      true_prob = jnp.exp(jnp.take_along_axis(logp, targets[..., None], -1)[..., 0])
      kl = jnp.sum(jnp.exp(final_logp) * (final_logp - logp), -1)
      return true_prob, kl

    return jax.lax.map(per_layer, hidden)

  return fn


def normalized_kl(true_prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Position-normalised KL per layer and sample: float[L, B] (method.md section 3)."""
  a = np.where(valid[None], true_prob, 0.0).astype(np.float64)
  q = a / np.maximum(a.sum(-1, keepdims=True), 1e-30)
  q = np.maximum(q, CLAMP)
  p = q[-1:]
  return np.sum(np.where(valid[None], q * np.log(q / p), 0.0), -1)


def full_vocab_kl(full_kl: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Mean over valid positions of KL(final || layer): float[L, B]."""
  return np.sum(np.where(valid[None], full_kl, 0.0), -1) / np.maximum(valid.sum(-1), 1)[None]


@dataclasses.dataclass
class Transition:
  """The detected transition point, the suggested range [start, end], and the fit behind it."""
  layer: int
  start: int
  end: int
  sse: list[float]
  spread_before: float
  spread_after: float


def find_transition(scores: np.ndarray, min_layer: int | None = None) -> Transition:
  """Transition point from per-layer, per-sample scores float[L, S].

  The mean curve m_l is fit by two straight lines, free on layers 0..t and pinned to 0 at the
  last layer on t+1..L-1; t minimises the total squared error. This is the knee the paper reads
  by eye: before t the curve is a noisy early phase (flat or slowly drifting), after it a smooth
  descent to 0. The suggested translator range is [t+1, L-2]. The spread across samples before and
  after t (mean std) is reported as a check that the curves bunch together after it.
  """
  num_layers = scores.shape[0]
  mean = scores.mean(axis=1)
  layers = np.arange(num_layers, dtype=np.float64)
  last = num_layers - 1
  lo = min_layer if min_layer is not None else max(2, num_layers // 4)
  sse = [np.inf] * num_layers
  for t in range(lo, num_layers - 3):
    early_x, early_y = layers[:t + 1], mean[:t + 1]
    coef = np.polyfit(early_x, early_y, 1)
    early_err = np.sum((np.polyval(coef, early_x) - early_y) ** 2)
    late_x, late_y = last - layers[t + 1:], mean[t + 1:]  # line through (last, 0)
    slope = np.dot(late_x, late_y) / np.dot(late_x, late_x)
    sse[t] = early_err + np.sum((slope * late_x - late_y) ** 2)
  t = int(np.argmin(sse))
  std = scores.std(axis=1)
  return Transition(layer=t, start=t + 1, end=num_layers - 2, sse=[float(x) for x in sse],
                    spread_before=float(std[:t + 1].mean()), spread_after=float(std[t + 1:last].mean()))
