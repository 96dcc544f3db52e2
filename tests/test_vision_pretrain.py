"""Encoder pretraining on labelled scenes, and the CLIP-format export it is loaded from."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from graft_jax.convert import vision
from graft_jax.data import synthetic_shapes as shapes
from graft_jax.models import vit
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vlm import VLM
from graft_jax.train.model_setup import starting_encoder
from graft_jax.vision_pretrain import scenes, train

TINY = vit.VitConfig(image_size=32, patch_size=8, width=32, depth=2, heads=2, mlp_dim=64)


def _perturbed_params(config: vit.VitConfig) -> dict:
  """Random params with every leaf moved off its init, so a mis-mapped tensor shows."""
  params = vit.init_params(config, jax.random.key(0))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_export_is_read_back_by_transformers_and_by_us(tmp_path):
  params = _perturbed_params(TINY)
  vision.save_hf_vision(params, TINY, str(tmp_path))
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  ours = np.asarray(vit.VisionTransformer(TINY).apply({"params": params}, jnp.asarray(images)))
  model = transformers.CLIPVisionModel.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2))
    # ours applies the post-layernorm to every token; transformers only to the pooled CLS
    theirs = model.post_layernorm(out.last_hidden_state).numpy()
  np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)
  config, loaded = vision.load_hf_vision(str(tmp_path))
  assert dataclasses.replace(config, act=None) == TINY and config.activation == TINY.activation
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, loaded)


def test_only_clip_encoders_are_exported(tmp_path):
  siglip = vit.VitConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, mlp_dim=64, variant="siglip")
  with pytest.raises(ValueError, match="Only clip-variant"):
    vision.save_hf_vision(vit.init_params(siglip, jax.random.key(0)), siglip, str(tmp_path))


def test_scene_labels_describe_the_scene():
  for index in range(20):
    image, labels = scenes.labelled_scene(0, index, 64, 16)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    n = labels["color_count"].sum()
    assert 1 <= n <= 4 and labels["shape_count"].sum() == n
    assert (labels["patch_color"] > 0).sum() == (labels["patch_shape"] > 0).sum() <= n
    for c in labels["patch_color"][labels["patch_color"] > 0]:  # every centred colour is counted
      assert labels["color_count"][c - 1] > 0
  # Deterministic, and never an image of the VQA splits (another rng stream).
  again, _ = scenes.labelled_scene(0, 3, 64, 16)
  np.testing.assert_array_equal(again, scenes.labelled_scene(0, 3, 64, 16)[0])
  for split_index in range(3):
    _, vqa_image = shapes.make_sample(0, split_index, 3, image_size=64)
    assert not np.array_equal(np.asarray(vqa_image), again)


def test_scene_grid_must_divide_the_image():
  with pytest.raises(ValueError, match="not a multiple of patch_size"):
    scenes.labelled_scenes(0, 0, 2, 30, 8)


def test_pretraining_learns_colours():
  params, summary = train.pretrain_encoder(TINY, steps=80, batch_size=32, lr=3e-3, seed=0, scenes=512,
                                           eval_scenes=128)
  assert summary["loss_last"] < 0.6 * summary["loss_first"]
  # chance for a centred patch's colour is 1/7 (six colours or none)
  assert summary["eval"]["acc/patch_color"] > 0.5
  assert jax.tree.structure(params) == jax.tree.structure(vit.init_params(TINY, jax.random.key(0)))


def test_pretraining_runs_once_and_refuses_other_settings(tmp_path):
  out = str(tmp_path / "enc")
  settings = dict(steps=3, batch_size=4, lr=1e-3, seed=0, scenes=16)
  first = train.run_vision_pretrain(out, TINY, **settings)
  mtime = (tmp_path / "enc" / "model.safetensors").stat().st_mtime_ns
  assert train.run_vision_pretrain(out, TINY, **settings) == first  # reused, not retrained
  assert (tmp_path / "enc" / "model.safetensors").stat().st_mtime_ns == mtime
  with pytest.raises(ValueError, match=r"other settings.*'steps': \(3, 4\)"):
    train.run_vision_pretrain(out, TINY, **{**settings, "steps": 4})
  (tmp_path / "enc" / "model.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(Exception, match="(?i)safetensors|header|deserializ"):
    train.run_vision_pretrain(out, TINY, **settings)


def test_stages_start_from_the_pretrained_encoder(tmp_path):
  params = _perturbed_params(TINY)
  vision.save_hf_vision(params, TINY, str(tmp_path))
  llm = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=4,
                    num_kv_heads=2, head_dim=4)
  model = VLM(TINY, llm, None, 2)
  cfg = ml_collections.ConfigDict({"source": str(tmp_path)})
  start = starting_encoder(model, cfg, seed=3)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), start["img"], params)
  fresh = starting_encoder(model, ml_collections.ConfigDict({"source": ""}), seed=3)
  assert not np.array_equal(np.asarray(fresh["img"]["pos_embed"]), np.asarray(params["pos_embed"]))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), start["proj"], fresh["proj"])
