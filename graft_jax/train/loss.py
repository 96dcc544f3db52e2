"""The training loss: a global token mean of cross-entropies, with two options off by default.

  loss = (ce_weight * sum_t w_t CE_t + kl_weight * sum_t w_t KL_t) / N

over the supervised targets t of the GLOBAL batch (every micro-batch and device together), N their
number: long answers do not count for less than short ones, unlike a mean of per-sample means.
CE_t = -log softmax(logits[t-1])[tokens[t]] in float32; a target is tokens[b, t] with
loss_mask[b, t] & valid[b, t] (t >= 1), predicted from position t-1.

Options (LossOptions):
  kl_weight > 0: adds KL(teacher || model) at the supervised positions, the teacher's logits given
    (e.g. the full target for a surrogate); ce_weight=0, kl_weight=1 is pure distillation.
    kl_rows="text" takes the KL in text-only samples alone (image samples: CE only), an anchor
    that keeps a trained translator close to the target on text while it learns images from CE.
  dynamic_weights: the reference's dynamic loss weights (method.md section 5), read as follows.
    In each image sample, the targets are cut into segments after every target that is an
    end-of-turn token (`end_of_turn_ids`, e.g. <|eot_id|> or <|im_end|>; the end-of-turn target
    closes its segment; targets after the last one form a final segment). A segment with n
    supervised targets gets r = log(n + 1); with R the largest r over all image-sample segments
    of the global batch, each of its targets gets w = max(R / r, 1) (normalised, inverted,
    clamped), so short answers weigh more. Text-only samples keep w = 1. The denominator stays N.
    The reference (facebookresearch/zero, `_calc_loss_weights_with_batchmean`) counts n as the
    segment's positions that are not the pad token, supervised or not (image slot and user text
    included), and puts text-only segments (n = 1) into R; here n counts supervised targets only,
    as method.md states it.
Without dynamic weights w = 1 everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp


KL_ROWS = ("all", "text")


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """See the module docstring. The defaults give the plain global token mean of CE."""
  ce_weight: float = 1.0
  kl_weight: float = 0.0
  dynamic_weights: bool = False
  end_of_turn_ids: tuple[int, ...] = ()
  kl_rows: str = "all"  # "all" or "text" (text-only samples alone)

  def __post_init__(self):
    if self.kl_rows not in KL_ROWS:
      raise ValueError(f"kl_rows must be one of {KL_ROWS}, got {self.kl_rows!r}")
    if self.dynamic_weights and not self.end_of_turn_ids:
      raise ValueError("dynamic_weights needs end_of_turn_ids (e.g. the id of <|eot_id|>)")
    if self.ce_weight < 0 or self.kl_weight < 0 or self.ce_weight + self.kl_weight == 0:
      raise ValueError(f"Need ce_weight, kl_weight >= 0, not both 0: {self.ce_weight}, {self.kl_weight}")


def targets_and_mask(batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(targets int[B, T-1], supervised bool[B, T-1]): targets[:, i] = tokens[:, i + 1], predicted
  from logits[:, i]."""
  return batch["tokens"][:, 1:], batch["loss_mask"][:, 1:] & batch["valid"][:, 1:]


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """float[B, N, V], int[B, N] -> float32[B, N]: -log softmax(logits)[target]."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def token_kl(logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """float[B, N, V] twice -> float32[B, N]: KL(softmax(teacher) || softmax(logits))."""
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def dynamic_loss_weights(targets: jax.Array, supervised: jax.Array, image_rows: jax.Array,
                         end_of_turn_ids: Sequence[int]) -> jax.Array:
  """int[B, N] targets, bool[B, N] supervised, bool[B] image samples -> float32[B, N] weights
  (0 where not supervised); see the module docstring. Pass the whole global batch."""
  n = targets.shape[1]
  is_end = jnp.isin(targets, jnp.asarray(end_of_turn_ids, targets.dtype))
  segment = jnp.cumsum(is_end, axis=1) - is_end  # an end-of-turn target closes its own segment
  per_segment = jax.vmap(lambda m, s: jax.ops.segment_sum(m, s, num_segments=n + 1))(
      supervised.astype(jnp.float32), segment)
  count = jnp.take_along_axis(per_segment, segment, axis=1)
  r = jnp.log(jnp.where(supervised, count, 1.0) + 1.0)
  in_image = supervised & image_rows[:, None]
  r_max = jnp.max(jnp.where(in_image, r, 0.0))
  w = jnp.where(image_rows[:, None], jnp.maximum(r_max / r, 1.0), 1.0)
  return jnp.where(supervised, w, 0.0)


def batch_weights(batch: Mapping[str, jax.Array], options: LossOptions) -> jax.Array:
  """float32[B, T-1] per-target weights for the global batch: 1 (or the dynamic weights) on
  supervised targets, 0 elsewhere."""
  targets, supervised = targets_and_mask(batch)
  if not options.dynamic_weights:
    return supervised.astype(jnp.float32)
  return dynamic_loss_weights(targets, supervised, batch["image_pos"] >= 0, options.end_of_turn_ids)


def kl_weights(weights: jax.Array, batch: Mapping[str, jax.Array], options: LossOptions) -> jax.Array:
  """float32[B, N] per-target weights of the KL term: `weights`, zeroed in image samples
  (image_pos >= 0) when options.kl_rows == "text"."""
  if options.kl_rows == "all":
    return weights
  text_rows = batch["image_pos"] < 0 if "image_pos" in batch else jnp.ones(weights.shape[:1], bool)
  return jnp.where(text_rows[:, None], weights, 0.0)


def supervised_positions(supervised: jax.Array, cap: int) -> tuple[jax.Array, jax.Array]:
  """bool[B, N] -> (positions int32[B, C], keep bool[B, C]), C = cap: each row's supervised
  positions in order, padded with position 0 and keep False. A row with more than `cap`
  supervised positions would lose some: callers take cap >= the largest row count
  (`supervised_cap`)."""
  pos = jax.vmap(lambda row: jnp.nonzero(row, size=cap, fill_value=0)[0])(supervised)
  keep = jnp.arange(cap)[None, :] < supervised.sum(axis=1, keepdims=True)
  return pos.astype(jnp.int32), keep


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
  """x [B, N, ...], positions int[B, C] -> [B, C, ...]."""
  index = positions.reshape(positions.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


def selected_loss_sums(logits: jax.Array, targets: jax.Array, keep: jax.Array, weights: jax.Array,
                       options: LossOptions, teacher_logits: jax.Array | None = None,
                       kl_weight_map: jax.Array | None = None) -> dict[str, jax.Array]:
  """The loss numerators over selected targets: logits (and teacher_logits) float[B, C, V] that
  predict targets int[B, C]; keep bool[B, C] marks real supervised targets, weights float32[B, C]
  their weights, kl_weight_map float32[B, C] those of the KL term (default `weights`; see
  `kl_weights`). Returns float32 scalars objective, ce_sum and (kl_weight > 0) kl_sum, the KL
  summed where its weight is non-zero."""
  ce = jnp.where(keep, token_cross_entropy(logits, targets), 0.0)
  out = {"ce_sum": ce.sum(), "objective": options.ce_weight * (weights * ce).sum()}
  if options.kl_weight > 0:
    if teacher_logits is None:
      raise ValueError("LossOptions.kl_weight > 0 needs teacher logits")
    kl_map = weights if kl_weight_map is None else kl_weight_map
    kl = jnp.where(keep & (kl_map > 0), token_kl(logits, teacher_logits), 0.0)
    out["kl_sum"] = kl.sum()
    out["objective"] = out["objective"] + options.kl_weight * (kl_map * kl).sum()
  return out


def token_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """float32 scalars: supervised targets, image_tokens (image-slot positions), text_tokens (valid
  text positions) of a (micro-)batch."""
  image = batch.get("image_mask", jnp.zeros_like(batch["valid"]))
  return {"supervised": targets_and_mask(batch)[1].sum().astype(jnp.float32),
          "image_tokens": image.sum().astype(jnp.float32),
          "text_tokens": (batch["valid"] & ~image).sum().astype(jnp.float32)}


def loss_sums(logits: jax.Array, batch: Mapping[str, jax.Array], weights: jax.Array,
              options: LossOptions, teacher_logits: jax.Array | None = None) -> dict[str, jax.Array]:
  """Sums over one (micro-)batch; divide by the global N once. logits (and teacher_logits)
  float[B, T, V] over the whole sequence, weights float32[B, T-1] from `batch_weights`.

  Returns float32 scalars: objective (the weighted numerator of the loss), ce_sum and kl_sum
  (unweighted), and the `token_counts`. The train step computes the same sums from logits at
  the supervised positions only (`supervised_positions`, `selected_loss_sums`)."""
  targets, supervised = targets_and_mask(batch)
  teacher = None if teacher_logits is None else teacher_logits[:, :-1]
  out = selected_loss_sums(logits[:, :-1], targets, supervised, weights, options, teacher,
                           kl_weights(weights, batch, options))
  return {**out, **token_counts(batch)}


def sum_keys(options: LossOptions) -> tuple[str, ...]:
  """The keys `loss_sums` returns under `options`."""
  keys = ("ce_sum", "objective", "supervised", "image_tokens", "text_tokens")
  return keys + (("kl_sum",) if options.kl_weight > 0 else ())


def finalize(sums: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, metrics) from global sums: every numerator divided once by max(N, 1)."""
  n = jnp.maximum(sums["supervised"], 1.0)
  metrics = {"loss": sums["objective"] / n, "ce": sums["ce_sum"] / n,
             "tokens/supervised": sums["supervised"], "tokens/image": sums["image_tokens"],
             "tokens/text": sums["text_tokens"]}
  if "kl_sum" in sums:
    metrics["kl"] = sums["kl_sum"] / n
  return metrics["loss"], metrics


def global_token_mean(logits: jax.Array, batch: Mapping[str, jax.Array],
                      options: LossOptions = LossOptions(),
                      teacher_logits: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss float32[], metrics) for one whole global batch (logits float[B, T, V])."""
  return finalize(loss_sums(logits, batch, batch_weights(batch, options), options, teacher_logits))
