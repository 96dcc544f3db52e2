"""Encoder pretraining on labelled synthetic scenes: the offline stand-in for a pretrained CLIP.

The paper grafts a pretrained CLIP ViT-L/14-336; no pretrained encoder is reachable offline, and a
ViT trained from scratch inside stage 2 (60 steps of 16 answers) learns the answer format but not
to see (README, "The reproduction"). So, as CLIP is pretrained before any VLM stage, the default
encoder is pretrained here first, on its own, on scenes that are not in the VQA splits:

  every patch token predicts the colour and shape of the object centred in it (or none);
  the class token predicts how many objects of each colour and of each shape the scene holds.

The heads are dropped afterwards; the encoder is written as a transformers CLIPVisionModel
directory, which stages load with `vit.source` exactly like the paper's CLIP.

  run_vision_pretrain("runs/x/vision_encoder", vit_cfg, steps=600, batch_size=128, lr=1e-3, seed=0)
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from graft_jax.convert.vision import load_hf_vision, save_hf_vision
from graft_jax.data import synthetic_shapes as shapes
from graft_jax.data.images import CLIP_MEAN, CLIP_STD
from graft_jax.models.vit import VisionTransformer, VitConfig
from graft_jax.vision_pretrain.scenes import COLOR_NAMES, labelled_scenes

MAX_COUNT = 4  # count heads classify 0..MAX_COUNT objects of a colour / shape
SETTINGS_FILE = "pretrain.json"


class PretrainModel(nn.Module):
  """The ViT and its pretraining heads."""
  config: VitConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """images float[B, H, W, 3] (normalised) -> logits: patch_color [B, P, 1 + colours],
    patch_shape [B, P, 1 + shapes], color_count [B, colours, 5], shape_count [B, shapes, 5]."""
    x = VisionTransformer(self.config, name="img")(images)
    cls, patches = x[:, 0], x[:, 1:]
    n_c, n_s, k = len(COLOR_NAMES), len(shapes.SHAPES), MAX_COUNT + 1
    return {"patch_color": nn.Dense(1 + n_c, name="patch_color")(patches),
            "patch_shape": nn.Dense(1 + n_s, name="patch_shape")(patches),
            "color_count": nn.Dense(n_c * k, name="color_count")(cls).reshape(-1, n_c, k),
            "shape_count": nn.Dense(n_s * k, name="shape_count")(cls).reshape(-1, n_s, k)}


def normalise(images: jax.Array) -> jax.Array:
  """uint8[B, H, W, 3] -> float32, as data/images.preprocess_image does for square images."""
  return (images.astype(jnp.float32) / 255.0 - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def losses_and_accuracies(logits: dict[str, jax.Array], labels: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
  """(summed mean cross-entropies, per-head accuracy). Patch heads are scored only on patches that
  hold an object centre (most patches are empty), counts on every (scene, colour / shape)."""
  total, metrics = 0.0, {}
  for name, lg in logits.items():
    target = jnp.minimum(labels[name], MAX_COUNT) if name.endswith("count") else labels[name]
    ce = optax.softmax_cross_entropy_with_integer_labels(lg.astype(jnp.float32), target)
    total = total + ce.mean()
    right = (lg.argmax(-1) == target).astype(jnp.float32)
    weight = (labels[name] > 0).astype(jnp.float32) if name.startswith("patch") else jnp.ones_like(right)
    metrics[f"acc/{name}"] = (right * weight).sum() / jnp.maximum(weight.sum(), 1.0)
  return total, metrics


def pretrain_encoder(vit: VitConfig, *, steps: int, batch_size: int, lr: float, seed: int, scenes: int,
                     eval_scenes: int = 512, max_objects: int = 4) -> tuple[dict, dict[str, Any]]:
  """Trains PretrainModel from scratch for `steps` steps on a pool of `scenes` labelled scenes
  (seeded by `seed`) -> (the ViT's params tree, summary: losses, held-out accuracies, seconds)."""
  t0 = time.time()
  images, labels = labelled_scenes(seed, 0, scenes, vit.image_size, vit.patch_size, max_objects)
  eval_images, eval_labels = labelled_scenes(seed, scenes, eval_scenes, vit.image_size, vit.patch_size, max_objects)
  model = PretrainModel(vit)
  params = model.init(jax.random.key(seed), normalise(images[:1]))["params"]
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(steps // 20, 1), max(steps, 2))
  optimizer = optax.adamw(schedule, weight_decay=0.05)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      loss, metrics = losses_and_accuracies(model.apply({"params": p}, normalise(images)), labels)
      return loss, metrics
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params, images, labels):
    return losses_and_accuracies(model.apply({"params": params}, normalise(images)), labels)

  rng = np.random.default_rng(seed)
  order, cursor, losses = rng.permutation(scenes), 0, []
  for i in range(steps):
    if cursor + batch_size > scenes:
      order, cursor = rng.permutation(scenes), 0
    idx = np.sort(order[cursor:cursor + batch_size])
    cursor += batch_size
    params, opt_state, loss = step(params, opt_state, images[idx], {k: v[idx] for k, v in labels.items()})
    losses.append(loss)
    if (i + 1) % 100 == 0:
      logging.info("encoder pretraining step %d/%d: loss %.3f", i + 1, steps, float(loss))
  eval_loss, accuracies = evaluate(params, eval_images, eval_labels)
  summary = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "scenes": scenes,
             "loss_first": float(losses[0]) if losses else None, "loss_last": float(losses[-1]) if losses else None,
             "eval_loss": float(eval_loss), "eval": {k: float(v) for k, v in accuracies.items()},
             "seconds": time.time() - t0}
  return jax.tree.map(np.asarray, params["img"]), summary


def run_vision_pretrain(out_dir: str, vit: VitConfig, *, steps: int, batch_size: int, lr: float, seed: int,
                        scenes: int) -> dict[str, Any]:
  """Pretrains once into `out_dir` (a transformers CLIPVisionModel directory plus pretrain.json);
  a rerun with the same settings reuses it, other settings are refused. -> the summary."""
  settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "scenes": scenes,
              "image_size": vit.image_size, "patch_size": vit.patch_size, "width": vit.width, "depth": vit.depth,
              "heads": vit.heads, "mlp_dim": vit.mlp_dim}
  path = os.path.join(out_dir, SETTINGS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    if stored["settings"] != settings:
      diffs = {k: (stored["settings"].get(k), v) for k, v in settings.items() if stored["settings"].get(k) != v}
      raise ValueError(f"{out_dir} holds an encoder pretrained with other settings (stored, asked): {diffs}; "
                       "use another run_dir or delete it")
    load_hf_vision(out_dir)  # fails clearly if the weights are missing or corrupt
    return stored["summary"]
  params, summary = pretrain_encoder(vit, steps=steps, batch_size=batch_size, lr=lr, seed=seed, scenes=scenes)
  save_hf_vision(params, vit, out_dir)
  with open(path, "w") as f:
    json.dump({"settings": settings, "summary": summary}, f, indent=1)
  return summary
