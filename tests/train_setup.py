"""Shared tiny set-up for tests/test_train_*.py: a surrogate VLM, batches, cached compiled steps."""
from __future__ import annotations

import functools

import jax
import numpy as np
import optax

from graft_jax.models.config import LlamaConfig
from graft_jax.models.vit import VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.train import layout as layout_lib
from graft_jax.train import partition, sharding
from graft_jax.train.loss import LossOptions
from graft_jax.train.optimizer import make_optimizer, make_schedule
from graft_jax.train.step import make_train_step

LLM = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=8)
VIT = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48)
PLAN = SurrogatePlan.create(4, [(1, 2)])  # blocks_0 (1 layer), translator_0 (1), blocks_1 (1)
SPEC = (r"llm/segments/translator_\d+/.*", "proj/.*", "img/post_ln/.*", "img/blocks/.*[-1:]")
TEXT_SPEC = (r"llm/segments/translator_\d+/.*",)
SGD = optax.sgd(0.5)  # updates = -0.5 * grads: compares gradients without Adam's sign amplification
SCHEDULE = make_schedule(1e-2, total_steps=4, warmup_ratio=0.0)  # 1e-2 at step 0, cosine to 0
ADAMW = make_optimizer(SCHEDULE)
ONE = (("data", 1),)


@functools.lru_cache(maxsize=None)
def setup() -> tuple[VLM, VLM, dict, dict]:
  """(surrogate model, target model, surrogate params, target params), fp32."""
  target_model = VLM(VIT, LLM)
  target = jax.jit(lambda r: init_vlm_params(target_model, r))(jax.random.key(0))
  target = jax.tree.map(np.asarray, target)
  return VLM(VIT, LLM, PLAN.segments), target_model, make_surrogate(target, PLAN), target


def make_batch(seed: int = 0, b: int = 8, t: int = 12, images: bool = True) -> dict:
  """A pipeline-style batch: even rows carry an image (if `images`), rows have different lengths
  and supervised counts, the last row is a padding row."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(t // 2, t + 1, size=b)
  lengths[-1] = 0
  valid = np.arange(t)[None, :] < lengths[:, None]
  has_image = (np.arange(b) % 2 == 0) & images & (lengths > 0)
  return {
      "tokens": np.where(valid, rng.integers(0, LLM.vocab_size, (b, t)), 0).astype(np.int32),
      "loss_mask": valid & (rng.random((b, t)) < 0.6) & (np.arange(t) > 0),
      "valid": valid,
      "image_pos": np.where(has_image, rng.integers(1, t // 2, size=b), -1).astype(np.int32),
      "images": (rng.normal(size=(b, VIT.image_size, VIT.image_size, 3)) * has_image[:, None, None, None]).astype(np.float32),
      "has_image": has_image,
      "record_index": np.arange(b, dtype=np.int32),
  }


@functools.lru_cache(maxsize=None)
def compiled(axes=ONE, k: int = 1, optimizer=SGD, spec=SPEC, decoder_only: bool = False,
             options: LossOptions = LossOptions(), with_teacher: bool = False, schedule=None,
             image_noise: float = 0.0, embed_penalty: float = 0.0):
  """(layout, step) for a mesh of `axes` over the first devices."""
  model, target_model, params, target = setup()
  mesh = sharding.make_mesh(axes, jax.devices()[:int(np.prod([s for _, s in axes]))])
  teacher_tree = {"llm": target["llm"]} if with_teacher else None
  layout = layout_lib.make_layout(mesh, params, spec, optimizer, abstract_teacher=teacher_tree)
  step = make_train_step(model, layout, optimizer, options, k, decoder_only=decoder_only,
                         teacher=target_model if with_teacher else None, schedule=schedule,
                         image_noise=image_noise, embed_penalty=embed_penalty)
  return layout, step


def run_steps(batches, **kw) -> tuple[list[dict], dict]:
  """Metrics of each step and the final params (numpy), starting from the surrogate's params."""
  model, _, params, target = setup()
  layout, step = compiled(**kw)
  spec = kw.get("spec", SPEC)
  trainable, frozen = partition.split(params, spec)
  state = layout.create_state(trainable, kw.get("optimizer", SGD))
  state, frozen = layout.place(state, frozen)
  teacher = jax.device_put({"llm": target["llm"]}, layout.teacher) if kw.get("with_teacher") else None
  metrics = []
  for batch in batches:
    state, m = step(state, frozen, batch, teacher) if teacher is not None else step(state, frozen, batch)
    metrics.append(jax.tree.map(np.asarray, m))
  assert int(state.step) == len(batches)
  return metrics, jax.tree.map(np.asarray, partition.merge(state.trainable, frozen))
