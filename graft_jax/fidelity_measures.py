"""Fidelity measures of a surrogate and of an encoder's image embeddings (issue 9, item 1).

- KL(target || surrogate) of next-token distributions on held-out text: `graft_jax.fidelity.next_token_kl`;
- the same KL at the answer positions of image-conditioned sequences, both decoders fed one
  encoder's image embeddings: `image_sequence_fidelity` (it also gives the hidden distance below);
- the distance between surrogate and target hidden states just before the last kept layer (the
  input of the target's layer L-1, which every surrogate keeps as its own last layer): relative L2
  ||h_s - h_t|| / ||h_t|| and cosine per position, averaged over positions:
  `text_hidden_distance` (text) and `image_sequence_fidelity` (image-conditioned);
- statistics of image embeddings against the LLM's token embeddings: `image_embedding_stats`.

Per-position values come out of jitted functions as float[B, T] and are averaged on the host with
`PositionMean`, so every mean is over positions (a global token mean), never a mean of per-sample
means. Hidden states are the decoder's per-layer outputs (`Decoder(collect_hidden=True)`); index -2
is the output of the second-to-last kept layer, i.e. the input of the last one.
"""
from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.llama import Decoder
from graft_jax.models.vlm import VLM

_TINY = 1e-12


def position_distance(h_s: jax.Array, h_t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """h_s, h_t float[..., D] -> (relative L2 ||h_s - h_t|| / ||h_t||, cosine), each float32[...]."""
  s, t = h_s.astype(jnp.float32), h_t.astype(jnp.float32)
  t_norm = jnp.linalg.norm(t, axis=-1)
  rel = jnp.linalg.norm(s - t, axis=-1) / jnp.maximum(t_norm, _TINY)
  cos = jnp.sum(s * t, -1) / jnp.maximum(jnp.linalg.norm(s, axis=-1) * t_norm, _TINY)
  return rel, cos


@dataclasses.dataclass
class PositionMean:
  """Running sums of per-position values over masked positions: add(values float[B, T], mask
  bool[B, T]) batch after batch, then `mean`."""
  total: float = 0.0
  count: int = 0

  def add(self, values, mask) -> None:
    values, mask = np.asarray(values, np.float64), np.asarray(mask, bool)
    self.total += float(values[mask].sum())
    self.count += int(mask.sum())

  @property
  def mean(self) -> float:
    return self.total / self.count if self.count else float("nan")


def _before_last(config: LlamaConfig, segments: Segments | None, llm: dict, *, tokens=None,
                 embeddings=None, mask=None) -> tuple[jax.Array, jax.Array]:
  """(final-normed hidden float[B, T, D], the last kept layer's input float[B, T, D])."""
  final, _, layers = Decoder(config, segments, collect_hidden=True).apply(
      {"params": llm}, tokens, embeddings, attention_mask=mask, return_logits=False)
  return final, layers[-2]


@functools.partial(jax.jit, static_argnames=("config", "segments"))
def _text_distance(target_llm, surrogate_llm, tokens, mask, *, config, segments):
  _, h_t = _before_last(config, None, target_llm, tokens=tokens, mask=mask)
  _, h_s = _before_last(config, segments, surrogate_llm, tokens=tokens, mask=mask)
  return position_distance(h_s, h_t)


def text_hidden_distance(target_llm: dict, surrogate_llm: dict, config: LlamaConfig, segments: Segments,
                         tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per position: (relative L2, cosine) float[B, T] between the surrogate's and the target's
  input to their last layer, on tokens int[B, T] right-padded with mask bool[B, T] (real tokens;
  values at padding are meaningless: average with `PositionMean` over `mask`). The surrogate
  (layout `segments`) needs at least 2 layers."""
  rel, cos = _text_distance(target_llm, surrogate_llm, jnp.asarray(tokens), jnp.asarray(mask),
                            config=config, segments=segments)
  return np.asarray(rel), np.asarray(cos)


def answer_positions(loss_mask: np.ndarray, valid: np.ndarray, multiple: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """The positions predicting supervised targets: for target t (loss_mask[t] & valid[t], t >= 1)
  the prediction is made at t - 1. loss_mask, valid bool[B, T] -> (positions int32[B, C], keep
  bool[B, C]); C is the largest row count rounded up to `multiple` (padding rows point at 0)."""
  targets = np.asarray(loss_mask, bool)[:, 1:] & np.asarray(valid, bool)[:, 1:]
  counts = targets.sum(1)
  width = max(multiple, -(-int(counts.max(initial=0)) // multiple) * multiple)
  positions = np.zeros((len(targets), width), np.int32)
  for row, target_row in enumerate(targets):
    where = np.nonzero(target_row)[0]
    positions[row, :len(where)] = where
  return positions, np.arange(width)[None, :] < counts[:, None]


@functools.partial(jax.jit, static_argnames=("model", "segments"))
def _image_pass(encoder, target_llm, surrogate_llm, tokens, images, image_pos, valid, positions, *, model, segments):
  outs = []
  image_emb = model.apply({"params": {**encoder, "llm": target_llm}}, images, method=VLM.image_embeddings)
  for llm, layout in ((target_llm, None), (surrogate_llm, segments)):
    vlm = model.clone(segments=layout)
    params = {"params": {**encoder, "llm": llm}}
    embeddings = vlm.apply(params, tokens, images, image_pos, method=VLM.embed_inputs)
    final, before_last = _before_last(model.llm, layout, llm, embeddings=embeddings, mask=valid)
    at = jnp.take_along_axis(final, positions[..., None], axis=1)  # [B, C, D]
    logits = Decoder(model.llm, layout).apply({"params": llm}, at, method="logits")
    outs.append((jax.nn.log_softmax(logits.astype(jnp.float32)), before_last))
  (logp_t, h_t), (logp_s, h_s) = outs
  kl = jnp.sum(jnp.exp(logp_t) * (logp_t - logp_s), -1)  # [B, C]
  rel, cos = position_distance(h_s, h_t)
  return kl, rel, cos, image_emb


def image_sequence_fidelity(model: VLM, encoder: dict, target_llm: dict, surrogate_llm: dict,
                            segments: Segments, batch: dict) -> dict[str, np.ndarray]:
  """Target vs surrogate on image-conditioned sequences, both fed the image embeddings of
  `encoder` {"img", "proj"} (each through its own embedding table; they share it).

  model: the VLM of the full target (segments None; its vit/projector rebuild the encoder side).
  batch (see fidelity_data.image_batches): tokens int[B, T] slot-expanded, images float[B, H, W, 3],
  image_pos int[B], valid bool[B, T], loss_mask bool[B, T] (the "standard" mask: the answer).
  Returns numpy arrays: kl float[B, C] KL(target || surrogate) at the positions predicting the
  answer, kl_keep bool[B, C]; rel_l2, cos float[B, T] at the last kept layer's input (average
  over `valid`, or over `image_mask` for the image slot); image_embeddings float[B, M, D] (as
  the target sees them: soi, the image tokens, eoi).
  """
  positions, keep = answer_positions(batch["loss_mask"], batch["valid"])
  kl, rel, cos, image_emb = _image_pass(encoder, target_llm, surrogate_llm, jnp.asarray(batch["tokens"]),
                             jnp.asarray(batch["images"], jnp.float32), jnp.asarray(batch["image_pos"]),
                             jnp.asarray(batch["valid"]), jnp.asarray(positions), model=model, segments=segments)
  return {"kl": np.asarray(kl), "kl_keep": keep, "rel_l2": np.asarray(rel), "cos": np.asarray(cos),
          "image_embeddings": np.asarray(image_emb)}


@jax.jit
def _nearest(x: jax.Array, token_unit: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x float[n, D], token_unit float[V, D] unit rows -> (max cosine float[n], argmax int[n])."""
  x = x.astype(jnp.float32)
  sims = (x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _TINY)) @ token_unit.T
  return sims.max(-1), sims.argmax(-1).astype(jnp.int32)


def nearest_tokens(x: np.ndarray, token_emb: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """For each x float[N, D], the cosine to its nearest token embedding (token_emb float[V, D]) and
  that token's id: (float32[N], int32[N]). Chunks of `chunk` rows (one compiled shape)."""
  e = jnp.asarray(token_emb, jnp.float32)
  unit = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), _TINY)
  x = np.asarray(x, np.float32)
  sims, ids = [], []
  for i in range(0, len(x), chunk):
    part = x[i:i + chunk]
    padded = np.concatenate([part, np.ones((chunk - len(part), x.shape[1]), np.float32)])
    s, k = _nearest(jnp.asarray(padded), unit)
    sims.append(np.asarray(s)[:len(part)])
    ids.append(np.asarray(k)[:len(part)])
  return np.concatenate(sims), np.concatenate(ids)


def image_embedding_stats(image_emb: np.ndarray, token_emb: np.ndarray, top: int = 8) -> dict:
  """Image embeddings float[N, D] (rows: the projected image tokens, soi/eoi left out by the
  caller) against the LLM's token embeddings float[V, D]:

  image_norm, token_norm: mean L2 norm of the rows; norm_ratio = image_norm / token_norm;
  image_rms, token_rms: mean RMS norm (L2 / sqrt(D)) of the rows (token_rms is the scale of the
    adapter's "rms_token_scale" output norm);
  mean_direction_cos: cosine between the mean image embedding and the mean token embedding;
  nearest_cos: mean over image embeddings of the cosine to the nearest token embedding (top-1);
  nearest_ids: [[token id, how many image embeddings have it as nearest], ...], the `top` most common.
  """
  x = np.asarray(image_emb, np.float64)
  e = np.asarray(token_emb, np.float64)
  d = x.shape[1]
  x_norm, e_norm = np.linalg.norm(x, axis=1), np.linalg.norm(e, axis=1)
  mx, me = x.mean(0), e.mean(0)
  sims, ids = nearest_tokens(x, e)
  counts = collections.Counter(ids.tolist()).most_common(top)
  return {"image_norm": float(x_norm.mean()), "token_norm": float(e_norm.mean()),
          "norm_ratio": float(x_norm.mean() / e_norm.mean()),
          "image_rms": float(x_norm.mean() / np.sqrt(d)), "token_rms": float(e_norm.mean() / np.sqrt(d)),
          "mean_direction_cos": float(mx @ me / max(np.linalg.norm(mx) * np.linalg.norm(me), _TINY)),
          "nearest_cos": float(sims.mean()),
          "nearest_ids": [[int(i), int(c)] for i, c in counts]}


def decode_nearest(stats: dict, tokenizer) -> list[dict]:
  """stats["nearest_ids"] with each token decoded: [{"id", "count", "token"}]."""
  return [{"id": i, "count": c, "token": tokenizer.decode([i])} for i, c in stats["nearest_ids"]]
