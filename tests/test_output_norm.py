"""The adapter's optional output norm (issue 9's lever): off by default and then bit-identical to
the plain adapter; on, every image embedding has the token embeddings' mean RMS norm."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from graft_jax.config_lib import vit_config
from graft_jax.models.config import LlamaConfig
from graft_jax.models.projector import Projector, token_embedding_rms
from graft_jax.models.vit import VisionTransformer, VitConfig
from graft_jax.models.vlm import VLM, init_vlm_params
from graft_jax.train.model_setup import init_encoder_side, vit_from_config

LLM = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8)
VIT = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48)
ON = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48, output_norm="rms_token_scale")
IMAGES = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


def _init(vit: VitConfig) -> dict:
  model = VLM(vit, LLM)
  return jax.jit(lambda r: init_vlm_params(model, r))(jax.random.key(0))


def _embeddings(vit: VitConfig, params: dict) -> np.ndarray:
  return np.asarray(VLM(vit, LLM).apply({"params": params}, IMAGES, method=VLM.image_embeddings))


def test_default_is_off_and_bit_identical_to_the_plain_adapter():
  assert VitConfig().output_norm == "none" and vit_config().output_norm == "none"
  params = _init(VIT)
  # The adapter as it was before the option: Projector(ViT(images)), no norm anywhere.
  tokens = VisionTransformer(VIT).apply({"params": params["img"]}, IMAGES)
  plain = Projector(LLM.hidden_size).apply({"params": params["proj"]}, tokens)
  np.testing.assert_array_equal(_embeddings(VIT, params), np.asarray(plain))


def test_the_option_adds_no_parameters():
  off = _init(VIT)
  on = _init(ON)
  assert jax.tree.structure(off) == jax.tree.structure(on)
  jax.tree.map(np.testing.assert_array_equal, off, on)
  side_off, side_on = init_encoder_side(VLM(VIT, LLM), 3), init_encoder_side(VLM(ON, LLM), 3)
  jax.tree.map(np.testing.assert_array_equal, side_off, side_on)


def test_on_every_embedding_has_the_token_embeddings_mean_rms():
  params = _init(ON)
  table = np.asarray(params["llm"]["embed"]["embedding"], np.float64)
  target = np.sqrt((table ** 2).mean(-1)).mean()
  assert np.isclose(float(token_embedding_rms(params["llm"]["embed"]["embedding"])), target, rtol=1e-6)
  out = _embeddings(ON, params)
  assert out.shape == (2, VIT.num_tokens + 2, 32)
  np.testing.assert_allclose(np.sqrt((out.astype(np.float64) ** 2).mean(-1)), target, rtol=1e-4)
  off = _embeddings(VIT, params)  # the same directions, only rescaled
  unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  np.testing.assert_allclose(unit(out), unit(off), atol=1e-5)


def test_on_the_scale_follows_the_decoder_it_is_grafted_into():
  params = _init(ON)
  doubled = {**params, "llm": {**params["llm"], "embed": {"embedding": params["llm"]["embed"]["embedding"] * 2}}}
  np.testing.assert_allclose(_embeddings(ON, doubled), 2 * _embeddings(ON, params), rtol=1e-5)


def test_config_block_and_errors():
  cfg = vit_config()
  assert vit_from_config(cfg).output_norm == "none"
  cfg.output_norm = "rms_token_scale"
  assert vit_from_config(cfg).output_norm == "rms_token_scale"
  old_package = ml_collections.ConfigDict({k: v for k, v in vit_config().to_dict().items() if k != "output_norm"})
  assert vit_from_config(old_package).output_norm == "none"  # encoder_config of packages made before the option
  with pytest.raises(ValueError, match="output_norm"):
    VitConfig(output_norm="layer")
  with pytest.raises(ValueError, match="token_rms"):
    Projector(8, output_norm="rms_token_scale").init(jax.random.key(0), np.zeros((1, 2, 4), np.float32))
