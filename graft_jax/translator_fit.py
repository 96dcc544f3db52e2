"""Stage 0 by hidden-state matching: fit each translator to the block of target layers it replaces.

For a range [a, b] the translator (initialised from layer a) must map what the target feeds layer a
to what the target's layer b hands on. Instead of training it through the surrogate's head with
cross-entropy (one scalar per token), this fits it directly to the target's own hidden states:

  loss = mean over real tokens of ||translator(h_{a-1}) - h_b||^2 / ||h_b||^2

where h_l float[B, T, D] is the target's layer-l output on the same sequence (h_{-1} = the token
embeddings). The target runs once, forward only, over a fixed set of sequences; the pairs are kept
on the host and the translator (one block per range) then trains on them for many cheap steps.
Each range is fitted on the target's own inputs (teacher forcing), so ranges are independent.

The run directory is a normal stage run (checkpoints/ with the translator segments as the
trainable tree, stage "translator_fit"), so `load_previous_stage` and every later stage read it
like the cross-entropy translator stage.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from graft_jax.data.padding import right_pad
from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import Decoder, SegmentStack
from graft_jax.models.rope import rope_tables
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.checkpoint import RunCheckpointer, run_metadata
from graft_jax.train.optimizer import make_optimizer, make_schedule
from graft_jax.train.state import TrainState

STAGE = "translator_fit"
TRAINABLE_SPEC = (r"llm/segments/translator_\d+/.*",)
_TINY = 1e-6


@functools.partial(jax.jit, static_argnames=("config", "boundaries"))
def _target_boundaries(llm: dict, embedded: jax.Array, valid: jax.Array, *, config: LlamaConfig,
                       boundaries: tuple[int, ...]) -> jax.Array:
  """float32[len(boundaries), B, T, D]: the target's layer outputs h_l for l in `boundaries`
  (l = -1: the input embeddings float[B, T, D]), with bool valid[B, T]."""
  _, _, hidden = Decoder(config, None, collect_hidden=True).apply(
      {"params": llm}, embeddings=embedded, attention_mask=valid, return_logits=False)
  stacked = jnp.concatenate([embedded[None].astype(hidden.dtype), hidden], axis=0)  # index l+1 = h_l
  return jnp.stack([stacked[l + 1] for l in boundaries]).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("config",))
def _embed_tokens(llm: dict, tokens: jax.Array, *, config: LlamaConfig) -> jax.Array:
  return Decoder(config).apply({"params": llm}, tokens, method=Decoder.embed_tokens)


@functools.partial(jax.jit, static_argnames=("model",))
def _embed_with_images(encoder: dict, llm: dict, tokens, images, image_pos, *, model: VLM) -> jax.Array:
  return model.apply({"params": {**encoder, "llm": llm}}, tokens, images, image_pos, method=VLM.embed_inputs)


def _pairs_from(target_llm: dict, config: LlamaConfig, plan: SurrogatePlan, embedded, valid) -> dict:
  boundaries = tuple(l for r in plan.ranges for l in (r.start - 1, r.end))
  h = np.asarray(_target_boundaries(target_llm, embedded, valid, config=config, boundaries=boundaries))
  return {"valid": np.asarray(valid), "x": [h[2 * k] for k in range(len(plan.ranges))],
          "y": [h[2 * k + 1] for k in range(len(plan.ranges))]}


def teacher_pairs(target_llm: dict, config: LlamaConfig, plan: SurrogatePlan, sequences: Sequence[np.ndarray],
                  batch_size: int, multiple: int = 32) -> list[dict]:
  """The target's (input, output) hidden states around every range, per batch of `sequences`
  (sorted by length so padding is small): [{"valid": bool[B, T], "x": [float32[B, T, D] per
  range], "y": [...]}]."""
  order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
  pairs = []
  for i in range(0, len(order), batch_size):
    rows = [sequences[j] for j in order[i:i + batch_size]]
    if len(rows) < batch_size:  # one shape per width: pad the batch with copies, masked out
      rows = rows + [rows[0]] * (batch_size - len(rows))
    tokens, valid = right_pad(rows, config.pad_token_id or 0, multiple)
    valid[len(order[i:i + batch_size]):] = False
    pairs.append(_pairs_from(target_llm, config, plan, _embed_tokens(target_llm, tokens, config=config), valid))
  return pairs


def image_teacher_pairs(model: VLM, encoder: dict, target_llm: dict, plan: SurrogatePlan,
                        batches: Sequence[dict]) -> list[dict]:
  """teacher_pairs on image-conditioned sequences: each batch (fidelity_data.image_batches: tokens,
  images, image_pos, valid) with `encoder`'s {"img", "proj"} image embeddings spliced in."""
  pairs = []
  for b in batches:
    embedded = _embed_with_images(encoder, target_llm, jnp.asarray(b["tokens"]), jnp.asarray(b["images"]),
                                  jnp.asarray(b["image_pos"]), model=model)
    pairs.append(_pairs_from(target_llm, model.llm, plan, embedded, b["valid"]))
  return pairs


def translator_outputs(translators: dict, x: jax.Array, valid: jax.Array, *, config: LlamaConfig,
                       name: str) -> jax.Array:
  """Segment `name` of `translators` applied to float[B, T, D] inputs, causal with bool valid[B, T]."""
  b, t, _ = x.shape
  positions = jnp.broadcast_to(jnp.arange(t)[None, :], (b, t))
  cos, sin = rope_tables(config, positions)
  causal = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
  mask = (causal[None] & valid[:, None, :])[:, None]
  depth = jax.tree.leaves(translators[name])[0].shape[0]
  y, _, _ = SegmentStack(config, ((name, depth),)).apply({"params": {name: translators[name]}},
                                                          x.astype(config.jnp_dtype), None, cos, sin, mask, 0)
  return y


def relative_error(pred: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean over valid tokens of ||pred - target||^2 / ||target||^2 (float32 scalar)."""
  pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
  per_token = jnp.sum((pred - target) ** 2, -1) / (jnp.sum(target ** 2, -1) + _TINY)
  return jnp.sum(per_token * valid) / jnp.maximum(valid.sum(), 1)


def _loss(translators: dict, batch: dict, *, config: LlamaConfig, names: tuple[str, ...]) -> jax.Array:
  errors = [relative_error(translator_outputs(translators, x, batch["valid"], config=config, name=n), y,
                           batch["valid"]) for n, x, y in zip(names, batch["x"], batch["y"])]
  return sum(errors) / len(errors)


def fit_translators(translators: dict, config: LlamaConfig, pairs: list[dict], *, steps: int, lr: float,
                    seed: int = 0) -> tuple[TrainState, list[float]]:
  """AdamW (warmup + cosine) on the pairs' batches in a seeded shuffled order, `steps` updates.
  translators: {"translator_<i>": stacked block params}. Returns (final state, loss per step)."""
  names = tuple(sorted(translators))
  optimizer = make_optimizer(make_schedule(lr, steps))
  state = TrainState.create(translators, optimizer)

  @jax.jit
  def step(state: TrainState, batch: dict) -> tuple[TrainState, jax.Array]:
    loss, grads = jax.value_and_grad(functools.partial(_loss, config=config, names=names))(state.trainable, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    return TrainState(state.step + 1, optax.apply_updates(state.trainable, updates), opt_state), loss

  rng = np.random.default_rng(seed)
  order, losses = [], []
  for _ in range(steps):
    if not order:
      order = list(rng.permutation(len(pairs)))
    state, loss = step(state, pairs[order.pop()])
    losses.append(loss)
  return state, [float(x) for x in jax.device_get(losses)]


def held_out_error(translators: dict, config: LlamaConfig, pairs: list[dict]) -> float:
  """The fit's loss on `pairs` (token-weighted mean over batches)."""
  names = tuple(sorted(translators))
  loss = jax.jit(functools.partial(_loss, config=config, names=names))
  total = sum(float(loss(translators, p)) * p["valid"].sum() for p in pairs)
  return total / sum(p["valid"].sum() for p in pairs)


def text_pairs(target_llm: dict, config: LlamaConfig, plan: SurrogatePlan, train_sequences: Sequence[np.ndarray],
               held_out_sequences: Sequence[np.ndarray], batch_size: int) -> Callable[[], tuple]:
  """run_translator_fit's `make_pairs` for token sequences: () -> (train pairs, held-out pairs,
  tokens the target ran over)."""
  def make():
    return (teacher_pairs(target_llm, config, plan, train_sequences, batch_size),
            teacher_pairs(target_llm, config, plan, held_out_sequences, batch_size),
            float(sum(len(s) for s in train_sequences)))
  return make


def run_translator_fit(run_dir: str, job_config, plan: SurrogatePlan, config: LlamaConfig, init: dict,
                       make_pairs: Callable[[], tuple], *, steps: int, lr: float, carry: dict | None = None,
                       carry_spec: Sequence[str] = ()) -> dict:
  """Fits translators from `init` {"translator_<i>": stacked block params} on make_pairs()'s
  (train pairs, held-out pairs, teacher tokens) and saves them as a stage run in run_dir, with
  `carry` (other subtrees, e.g. the current encoder side {"img", "proj"}, matched by
  `carry_spec`) saved beside them unchanged so that a later stage started from run_dir gets both.
  Returns {"run_dir", "loss_first", "loss_last", "held_out_before", "held_out_after" (relative
  hidden errors), "seconds", "teacher_tokens", "fit_tokens", ...}; a run that already has a
  checkpoint is read back, not refitted."""
  checkpointer = RunCheckpointer(os.path.join(run_dir, "checkpoints"), keep_last=1, save_every=0)
  try:
    if checkpointer.latest_step() is not None:
      meta = checkpointer.read_metadata()
      if meta["stage"] != STAGE:
        raise ValueError(f"{run_dir} holds a {meta['stage']!r} run, not translators fitted to hidden states; "
                         "use another run_dir (or translator_objective='ce' to reuse it)")
      if meta["plan"]["ranges"] != plan.to_dict()["ranges"]:
        raise ValueError(f"{run_dir} holds translators for plan {meta['plan']['description']!r}, "
                         f"not {plan.describe()!r}; use another run_dir")
      print(f"resumed {run_dir} (translators fitted to hidden states, {meta['step']} steps)")
      return {"run_dir": run_dir, **meta.get("fit", {})}
    start = time.perf_counter()
    pairs, held_out, teacher_tokens = make_pairs()
    teacher_seconds = time.perf_counter() - start
    before = held_out_error(init, config, held_out)
    state, losses = fit_translators(init, config, pairs, steps=steps, lr=lr)
    after = held_out_error(state.trainable, config, held_out)
    fifth = max(1, len(losses) // 5)
    tokens_per_batch = float(np.mean([p["valid"].sum() for p in pairs]))
    fit = {"loss_first": float(np.mean(losses[:fifth])), "loss_last": float(np.mean(losses[-fifth:])),
           "held_out_before": float(before), "held_out_after": float(after), "steps": int(steps),
           "teacher_seconds": teacher_seconds, "seconds": time.perf_counter() - start,
           "train_batches": len(pairs),
           "teacher_tokens": float(teacher_tokens),  # the target's forward pass, once
           "fit_tokens": tokens_per_batch * steps}  # through the translator blocks, forward + backward
    logging.info("translator fit: %s", fit)
    print(f"translator fit ({steps} steps, {len(pairs)} batches): relative hidden error on held-out "
          f"sequences {before:.3f} -> {after:.3f}; {fit['seconds']:.0f} s")
    trainable = {"llm": {"segments": state.trainable}, **(carry or {})}
    meta = run_metadata(job_config, plan, STAGE, list(TRAINABLE_SPEC) + list(carry_spec))
    checkpointer.save(steps, TrainState(state.step, trainable, state.opt_state), None, {**meta, "fit": fit},
                      force=True)
    checkpointer.wait()
    return {"run_dir": run_dir, **fit}
  finally:
    checkpointer.close()
