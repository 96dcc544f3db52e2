"""ViT parity with transformers' CLIP/SigLIP vision models through the safetensors converter, and
the converter's errors."""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

from graft_jax.convert import vision
from graft_jax.convert.safetensors_io import SafetensorsCheckpoint
from graft_jax.models import vit

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            patch_size=8)


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Move every weight off its init (LN scales off 1, biases off 0) so a mis-mapped tensor shows."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _clip(seed: int = 0, **overrides) -> transformers.CLIPVisionModel:
  torch.manual_seed(seed)
  return _perturb(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**{**TINY, **overrides})), seed)


def _siglip(seed: int = 1, **overrides) -> transformers.SiglipVisionModel:
  torch.manual_seed(seed)
  cfg = transformers.SiglipVisionConfig(**{**TINY, "hidden_size": 48, "num_attention_heads": 3, **overrides})
  return _perturb(transformers.SiglipVisionModel(cfg), seed)


def _images(batch: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
  """float[B, H, W, 3]."""
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def _ours(model_dir, images: np.ndarray, **overrides) -> np.ndarray:
  config, params = vision.load_hf_vision(str(model_dir), **overrides)
  return np.asarray(vit.VisionTransformer(config).apply({"params": params}, jnp.asarray(images)))


def _torch_in(images: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(images).permute(0, 3, 1, 2)


def test_clip_matches_transformers(tmp_path):
  model = _clip()
  model.save_pretrained(tmp_path)
  images = _images()
  with torch.no_grad():
    out = model(pixel_values=_torch_in(images))
    # HF applies post_layernorm to the pooled CLS only; the method applies it to every token.
    want = model.post_layernorm(out.last_hidden_state).numpy()
  got = _ours(tmp_path, images)
  assert got.shape == (2, 17, 32)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_siglip_matches_transformers(tmp_path):
  model = _siglip()
  model.save_pretrained(tmp_path)
  images = _images(seed=1)
  with torch.no_grad():
    want = model(pixel_values=_torch_in(images)).last_hidden_state.numpy()  # post-LN on all tokens
  got = _ours(tmp_path, images)
  assert got.shape == (2, 16, 48)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_full_clip_model_checkpoint(tmp_path):
  """A CLIPModel save: tensors under `vision_model.`, config under `vision_config`."""
  torch.manual_seed(2)
  text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64,
              bos_token_id=0, eos_token_id=1, pad_token_id=1)
  model = _perturb(transformers.CLIPModel(transformers.CLIPConfig(vision_config=TINY, text_config=text)), 2)
  model.save_pretrained(tmp_path)
  images = _images(seed=2)
  with torch.no_grad():
    tower = model.vision_model
    want = tower.post_layernorm(tower(pixel_values=_torch_in(images)).last_hidden_state).numpy()
  np.testing.assert_allclose(_ours(tmp_path, images), want, atol=1e-4, rtol=0)


def test_bf16_checkpoint_loads_into_requested_dtype(tmp_path):
  model = _clip()
  model.to(torch.bfloat16).save_pretrained(tmp_path)
  config, params = vision.load_hf_vision(str(tmp_path), param_dtype=jnp.float32)
  want = model.encoder.layers[1].mlp.fc1.weight.detach().float().numpy().T
  got = params["blocks"]["mlp"]["fc1"]["kernel"]
  assert got.dtype == np.float32 and config.param_dtype == jnp.float32
  np.testing.assert_array_equal(got[1], want)


def test_remat_changes_nothing_numerically():
  config = vit.VitConfig(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_dim=64)
  params = vit.init_params(config, jax.random.key(0))
  images = jnp.asarray(_images())

  def loss(p, cfg):
    return jnp.sum(vit.VisionTransformer(cfg).apply({"params": p}, images) ** 2)

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  plain = grad(params, config)
  remat = grad(params, dataclasses.replace(config, remat="full"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), plain, remat)


def test_init_params_tree_and_layer_axis():
  config = vit.VitConfig(image_size=32, patch_size=8, width=32, depth=3, heads=4, mlp_dim=64, variant="siglip")
  params = vit.init_params(config, jax.random.key(0))
  assert set(params) == {"patch_embed", "pos_embed", "blocks", "post_ln"}
  assert params["blocks"]["attn"]["q_proj"]["kernel"].shape == (3, 32, 32)
  assert params["patch_embed"]["bias"].shape == (32,)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))


def test_trainable_layer_mask_and_layer_index():
  np.testing.assert_array_equal(vit.trainable_layer_mask(4, 2), [False, False, True, True])
  np.testing.assert_array_equal(vit.trainable_layer_mask(3, 0), [False] * 3)
  np.testing.assert_array_equal(vit.trainable_layer_mask(3, 3), [True] * 3)
  assert vit.hf_layer_index(-1, 24) == 23 and vit.hf_layer_index(5, 24) == 5
  with pytest.raises(ValueError, match="last_k"):
    vit.trainable_layer_mask(4, 5)
  with pytest.raises(IndexError):
    vit.hf_layer_index(24, 24)


# ---- bad inputs ----

def test_bad_config_values():
  with pytest.raises(ValueError, match="variant"):
    vit.VitConfig(variant="dino")
  with pytest.raises(ValueError, match="remat"):
    vit.VitConfig(remat="some")
  with pytest.raises(ValueError, match="patch_size"):
    vit.VitConfig(image_size=30, patch_size=8)


def test_wrong_image_shape():
  config = vit.VitConfig(image_size=32, patch_size=8, width=32, depth=1, heads=4, mlp_dim=64)
  params = vit.init_params(config, jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[B, 32, 32, 3\]"):
    vit.VisionTransformer(config).apply({"params": params}, jnp.zeros((1, 3, 32, 32)))


def test_missing_directory_and_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    vision.load_hf_vision(str(tmp_path / "nowhere"))
  _clip().save_pretrained(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    vision.load_hf_vision(str(tmp_path))


def _edit_config(model_dir, **changes) -> None:
  path = model_dir / "config.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_wrong_model_type(tmp_path):
  _clip().save_pretrained(tmp_path)
  _edit_config(tmp_path, model_type="llama")
  with pytest.raises(ValueError, match="model_type 'llama'"):
    vision.load_hf_vision(str(tmp_path))


def test_unsupported_activation(tmp_path):
  with pytest.raises(ValueError, match="hidden_act 'relu'"):
    vision.vit_config_from_hf({"model_type": "clip_vision_model", **TINY, "hidden_act": "relu"})


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
  _clip().save_pretrained(tmp_path)
  _edit_config(tmp_path, intermediate_size=48)
  with pytest.raises(ValueError, match=r"'encoder\.layers\.0\.mlp\.fc1\.weight' has shape \(64, 32\).*\(48, 32\)"):
    vision.load_hf_vision(str(tmp_path))


def test_missing_tensor_is_named(tmp_path):
  _siglip().save_pretrained(tmp_path)
  tensors = dict(SafetensorsCheckpoint(str(tmp_path)))
  del tensors["encoder.layers.1.self_attn.k_proj.bias"]
  save_file({k: np.array(v) for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"encoder\.layers\.1\.self_attn\.k_proj\.bias"):
    vision.load_hf_vision(str(tmp_path))


def test_more_layers_than_config(tmp_path):
  _clip().save_pretrained(tmp_path)
  _edit_config(tmp_path, num_hidden_layers=1)
  with pytest.raises(ValueError, match="num_hidden_layers=1"):
    vision.load_hf_vision(str(tmp_path))
