"""The sharded, jitted train step with gradient accumulation.

  step = make_train_step(model, layout, optimizer, LossOptions(), num_microbatches=k)
  state, metrics = step(state, frozen, batch)                  # batch: the pipeline's dict
  state, metrics = step(state, frozen, batch, teacher_params)  # with a teacher (KL distillation)

Inside: the image slot is expanded (train/batch.py; skipped when decoder_only), per-target loss
weights are computed on the whole global batch, the batch is cut into k micro-batches, and a
lax.scan sums, per micro-batch, the gradient of the weighted CE/KL numerator w.r.t. the trainable
tree only (`jax.value_and_grad(objective)(trainable, frozen, micro)`) plus the loss sums and
token counts. Gradients and losses are divided once by the global number of supervised targets,
so k micro-batches equal one step on the whole batch. The state is donated.

The LM head runs only where there is a target: the decoder returns final-normed hidden states,
each row's supervised positions are gathered (at most C per row, C = `supervised_cap` of the
batch: the largest row count rounded up to 16, so a handful of values compile), and logits
float[B, C, V] are taken there. In stage 2 that is ~10 of ~100 positions per row.

`image_noise` > 0 adds relative Gaussian noise to the image embeddings (models/vlm.py
`add_relative_noise`); micro-batch i of step s draws it from fold_in(fold_in(key(noise_seed), s), i),
and a teacher sees the same noised embeddings as the student.

`embed_penalty` > 0 adds embed_penalty x P to the loss, P the penalty on the image embeddings'
statistics against the token embeddings (train/embedding_penalty.py), taken on each micro-batch's
clean embeddings (a second pass of the small encoder) and averaged over the micro-batches.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
import optax

from graft_jax.models.llama import Decoder
from graft_jax.models.vlm import VLM
from graft_jax.train import sharding
from graft_jax.train.batch import expand_batch, split_microbatches
from graft_jax.train.embedding_penalty import embedding_stat_terms
from graft_jax.train.layout import TrainLayout
from graft_jax.train.loss import (LossOptions, batch_weights, finalize, gather_positions, kl_weights,
                                  selected_loss_sums, sum_keys, supervised_positions, targets_and_mask,
                                  token_counts)
from graft_jax.train.partition import merge
from graft_jax.train.state import TrainState


def logits_fn(model: VLM, decoder_only: bool) -> Callable[[dict, Mapping[str, jax.Array]], jax.Array]:
  """(params, batch) -> logits float[B, T, V]. decoder_only runs `params["llm"]` on the tokens
  alone (no vision tower: text-only stages); otherwise the VLM on a slot-expanded batch."""
  hidden, head = hidden_and_head_fns(model, decoder_only)
  return lambda params, b: head(params, hidden(params, b))


def hidden_and_head_fns(model: VLM, decoder_only: bool, image_noise: float = 0.0) -> tuple[Callable, Callable]:
  """((params, batch[, noise_key]) -> final-normed hidden float[B, T, D], (params, float[..., D]) ->
  logits float[..., V]): the decoder without and then only its LM head, so logits can be taken at
  a few positions. decoder_only as in `logits_fn`; image_noise > 0 noises the image embeddings
  from `noise_key` (models/vlm.py)."""
  decoder = Decoder(model.llm, model.segments)
  head = lambda params, h: decoder.apply({"params": params["llm"]}, h, method="logits")
  if decoder_only:
    return (lambda params, b, noise_key=None: decoder.apply({"params": params["llm"]}, b["tokens"],
                                                            return_logits=False)[0], head)

  def hidden(params, b, noise_key=None):
    return model.apply({"params": params}, b["tokens"], b["images"], b["image_pos"], return_logits=False,
                       image_noise=image_noise, noise_key=noise_key)[0]
  return hidden, head


def _local_rows(x: Any) -> np.ndarray:
  """The rows of a [B, T] batch leaf this process holds: all of a host array, the addressable
  shards of a global jax.Array (whole rows, since only the batch axis is sharded)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.concatenate([np.asarray(shard.data) for shard in x.addressable_shards], axis=0)
  return np.asarray(x)


def supervised_cap(batch: Mapping[str, Any], multiple: int = 16) -> int:
  """The number C of positions per row at which the step takes logits: the largest count of
  supervised targets in a row of the global batch, rounded up to `multiple` (so a handful of
  values, each compiled once) and at most T - 1. On several hosts the count is agreed with
  process_allgather so every host compiles the same program."""
  supervised = _local_rows(batch["loss_mask"])[:, 1:] & _local_rows(batch["valid"])[:, 1:]
  count = int(supervised.sum(axis=1).max(initial=0))
  if jax.process_count() > 1:
    count = int(np.max(multihost_utils.process_allgather(np.asarray(count))))
  width = batch["tokens"].shape[1] - 1
  return max(1, min(width, -(-count // multiple) * multiple))


def make_train_step(model: VLM, layout: TrainLayout, optimizer: optax.GradientTransformation,
                    options: LossOptions = LossOptions(), num_microbatches: int = 1, *,
                    decoder_only: bool = False, pad_id: int = 0,
                    schedule: optax.Schedule | None = None, teacher: VLM | None = None,
                    params_transform: Callable[[dict], dict] | None = None,
                    donate_state: bool = True, image_noise: float = 0.0, noise_seed: int = 0,
                    embed_penalty: float = 0.0) -> Callable:
  """The jitted step `(state, frozen, batch[, teacher_params]) -> (state, metrics)`.

  model: the VLM whose params are merge(state.trainable, frozen) (the surrogate when training
    against one). teacher: the VLM giving the KL target (needed iff options.kl_weight > 0); its
    params are {**stop_gradient(params), **teacher_params}, e.g. teacher_params = {"llm": full
    target}, so the teacher sees the current encoder (the graft of it) but passes no gradient.
  schedule: if given, metrics include the learning rate of this step.
  params_transform: params -> params applied right after merge(trainable, frozen), inside the
    differentiated objective (e.g. train/lora.py's apply_lora: adapters folded into the kernels);
    the student and the teacher see its output. None: the identity.
  donate_state: donate the state's buffers to the step (the update is written in place); False
    only to measure what donation saves (experiments/bench_step_options.py).
  image_noise: sigma of the relative noise on the image embeddings (0: none); noise_seed its key.
  embed_penalty: weight of the image-embedding statistics penalty (0: none).
  metrics (replicated float32 scalars): loss, ce, [kl], [embed_penalty] (P, unweighted),
  tokens/{supervised,image,text}, grad_norm (before clipping), [lr].
  """
  if (options.kl_weight > 0) != (teacher is not None):
    raise ValueError("Give a teacher exactly when LossOptions.kl_weight > 0")
  k = int(num_microbatches)
  if k < 1:
    raise ValueError(f"num_microbatches must be >= 1, got {k}")
  if image_noise < 0 or (image_noise > 0 and decoder_only):
    raise ValueError(f"image_noise must be >= 0, and 0 in a decoder_only (text) step; got {image_noise}")
  if embed_penalty < 0 or (embed_penalty > 0 and decoder_only):
    raise ValueError(f"embed_penalty must be >= 0, and 0 in a decoder_only (text) step; got {embed_penalty}")
  mesh = layout.mesh
  axes = sharding.batch_axes(mesh)
  student_hidden, student_head = hidden_and_head_fns(model, decoder_only, image_noise)
  teacher_fns = None if teacher is None else hidden_and_head_fns(teacher, decoder_only, image_noise)

  def objective(trainable, frozen, micro, teacher_params, cap, noise_key, n):
    params = merge(trainable, frozen)
    if params_transform is not None:
      params = params_transform(params)
    targets, supervised = targets_and_mask(micro)
    pos, keep = supervised_positions(supervised, cap)  # logits only where there is a target
    logits_at = lambda fns, p: fns[1](p, gather_positions(fns[0](p, micro, noise_key)[:, :-1], pos))
    logits = logits_at((student_hidden, student_head), params)
    target = None
    if teacher_fns is not None:
      target = logits_at(teacher_fns, {**jax.lax.stop_gradient(params), **teacher_params})
    kl_map = None if target is None else gather_positions(kl_weights(micro["weights"], micro, options), pos)
    sums = selected_loss_sums(logits, gather_positions(targets, pos), keep,
                              gather_positions(micro["weights"], pos), options, target, kl_map)
    sums.update(token_counts(micro))
    if embed_penalty > 0:  # weighted so that, divided by n, the step adds embed_penalty x mean_micro P
      image_emb = model.apply({"params": params}, micro["images"], method="image_embeddings")[:, 1:-1]
      p = embedding_stat_terms(image_emb, micro["image_pos"] >= 0, params["llm"]["embed"]["embedding"])["penalty"]
      sums["embed_penalty_sum"] = p
      sums["objective"] = sums["objective"] + embed_penalty * p * n / k
    return sums["objective"], sums

  grad_fn = jax.grad(objective, has_aux=True)

  def step(state: TrainState, frozen, batch, teacher_params, cap):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(layout.logical_rules):
      if decoder_only:  # tokens as they are; images unused
        batch = {key: value for key, value in batch.items() if key != "images"}
      else:
        batch = expand_batch(batch, model.image_len, pad_id)
      weights = batch_weights(batch, options)
      n = jnp.maximum(jnp.sum(targets_and_mask(batch)[1]).astype(jnp.float32), 1.0)
      micro = split_microbatches({**batch, "weights": weights}, k, axes)
      step_key = jax.random.fold_in(jax.random.key(noise_seed), state.step)

      def body(carry, mb_and_index):
        mb, index = mb_and_index
        grads, sums = grad_fn(state.trainable, frozen, mb, teacher_params, cap,
                              jax.random.fold_in(step_key, index), n)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

      zero_grads = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), state.trainable)
      keys = sum_keys(options) + (("embed_penalty_sum",) if embed_penalty > 0 else ())
      zero_sums = {key: jnp.zeros((), jnp.float32) for key in keys}
      (grad_sums, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), (micro, jnp.arange(k)))
      grads = jax.tree.map(lambda g, p: (g / n).astype(p.dtype), grad_sums, state.trainable)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
      trainable = optax.apply_updates(state.trainable, updates)
    _, metrics = finalize(sums)
    if embed_penalty > 0:
      metrics["embed_penalty"] = sums["embed_penalty_sum"] / k
    metrics["grad_norm"] = optax.tree.norm(grads)
    if schedule is not None:
      metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return TrainState(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

  teacher_sh = layout.teacher if teacher is not None else None
  compiled_by_cap: dict[int, Callable] = {}

  def jitted_for(cap: int) -> Callable:
    """The step jitted for `cap` logit positions per row (one compilation per value)."""
    if cap not in compiled_by_cap:
      compiled_by_cap[cap] = jax.jit(
          functools.partial(step, cap=cap), in_shardings=(layout.state, layout.frozen, layout.batch, teacher_sh),
          out_shardings=(layout.state, layout.replicated),
          donate_argnums=(0,) if donate_state else ())
    return compiled_by_cap[cap]

  rows = k * sharding.batch_size_multiple(mesh)

  def train_step(state: TrainState, frozen, batch: Mapping[str, Any], teacher_params=None):
    if (teacher_params is None) != (teacher is None):
      raise ValueError("Pass teacher_params exactly when the step was made with a teacher")
    b = batch["tokens"].shape[0]
    if b % rows:
      raise ValueError(f"Batch size {b} must be a multiple of num_microbatches x batch shards = {rows}")
    if decoder_only and isinstance(batch.get("has_image"), np.ndarray) and batch["has_image"].any():
      raise ValueError("A decoder_only step got a batch with images")
    return jitted_for(supervised_cap(batch))(state, frozen, batch, teacher_params)

  train_step.jitted_for = jitted_for
  return train_step
