"""Bad inputs to the paper recipes give clear errors before anything heavy runs: a checkpoint
whose layer count doesn't match the translator range, a mesh that doesn't divide the devices, an
unknown field, a plan that cannot fit, and the other launch checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from graft_jax.paper.checks import RecipeError, check_recipe, resolve_batch
from graft_jax.paper.footprint import PlanDoesNotFit
from graft_jax.paper.launch import launch
from graft_jax.paper.recipe import parse_arg
from graft_jax.tasks import train as train_task
from graft_jax.train import sharding
from graft_jax.train.encoder_init import pretrained_encoder
from graft_jax.train.model_setup import vit_from_config
from tests.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe(arg="llama-3.2-3b,pretrain", **fields):
  config = load_config("paper/recipe", arg)
  for key, value in fields.items():
    node = config
    *path, last = key.split("__")
    for p in path:
      node = node[p]
    node[last] = value
  config.lock()
  return config


def _hf_llama_config(path, layers, hidden=4096, mlp=14336, heads=32):
  """An HF config.json of Llama-3.1-8B's shapes (or others) with `layers` layers (no weights needed)."""
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps({
      "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
      "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads,
      "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192}, "rope_theta": 500000.0,
      "tie_word_embeddings": False, "max_position_embeddings": 131072}))
  return str(path)


def test_checkpoint_whose_layers_do_not_fit_the_translator_range(tmp_path):
  source = _hf_llama_config(tmp_path / "llama-8b", 32)  # an 8B checkpoint under the 3B recipe
  config = _recipe("llama-3.2-3b,pretrain", model__source=source, dry_run=True)
  with pytest.raises(RecipeError, match=r"has 32 layers, but the llama-3.2-3b,pretrain recipe's translator range "
                                        r"\[16, 26\] is for the 28-layer llama-3.2-3b"):
    check_recipe(config)
  config = _recipe("llama-3.1-8b,finetune_decoder", model__source=_hf_llama_config(tmp_path / "short", 30),
                   dry_run=True)
  with pytest.raises(RecipeError, match="has 30 layers; the llama-3.1-8b,finetune_decoder recipe is for the 32-layer"):
    check_recipe(config)
  check_recipe(_recipe("llama-3.1-8b,pretrain", model__source=_hf_llama_config(tmp_path / "ok", 32), dry_run=True))


def test_encoder_checkpoint_of_other_shapes(tmp_path):
  (tmp_path / "clip").mkdir()
  (tmp_path / "clip" / "config.json").write_text(json.dumps({
      "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu"}))
  config = _recipe(vit__source=str(tmp_path / "clip"), dry_run=True)
  with pytest.raises(RecipeError, match="does not match the recipe's encoder: image_size 224 != 336"):
    check_recipe(config)


def test_mesh_that_does_not_divide_the_devices():
  config = _recipe(dry_run=True, mesh=(("data", 3), ("fsdp", -1), ("tensor", 1)))
  with pytest.raises(ValueError, match=r"Mesh axes .* do not divide 8 devices"):
    train_task.run(config)  # the train task sends recipe configs through the launch checks
  with pytest.raises(ValueError, match=r"need 16 devices, have 8"):
    launch(_recipe(dry_run=True, mesh=(("data", 2), ("fsdp", 8), ("tensor", 1))))


def test_global_batch_that_does_not_split_over_the_batch_shards():
  mesh = sharding.make_mesh((("data", 1), ("fsdp", -1), ("tensor", 1)), jax.devices()[:6])
  with pytest.raises(RecipeError, match="global batch 256 cannot be split over 6 batch shards"):
    resolve_batch(_recipe(), mesh)
  mesh = sharding.make_mesh((("data", 1), ("fsdp", -1), ("tensor", 1)))
  assert resolve_batch(_recipe("llama-3.2-3b,finetune_decoder"), mesh) == (2, 8)  # 128 = 8 x 2 rows x 8
  config = _recipe("llama-3.2-3b,finetune_decoder", train__per_device_batch=64)
  assert resolve_batch(config, mesh) == (16, 1) and config.train.microbatches == 1  # capped by 128 / 8


def test_unknown_field_and_unknown_recipe():
  result = subprocess.run([sys.executable, "-m", "graft_jax.main", "--config=configs/paper/recipe.py:llama-3.2-3b,pretrain",
                           "--config.train.no_such_field=1"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0 and "unknown config key 'no_such_field'" in result.stderr
  with pytest.raises(ValueError, match="Unknown recipe stage 'stage9'"):
    parse_arg("llama-3.1-70b,stage9")
  with pytest.raises(ValueError, match="Unknown recipe target 'llama-2-7b'"):
    parse_arg("llama-2-7b,pretrain")
  with pytest.raises(ValueError, match="needs ':TARGET,STAGE'"):
    parse_arg(None)


def test_dry_run_only_fields_and_missing_paths_for_training(tmp_path):
  with pytest.raises(RecipeError, match="width_divisor=8 shrinks the model for dry runs only"):
    check_recipe(_recipe(width_divisor=8))
  with pytest.raises(RecipeError, match="in dry runs only"):
    check_recipe(_recipe(topology="v5p:2x2x2"))
  with pytest.raises(RecipeError, match="needs --config.model.source"):
    check_recipe(_recipe())
  source = _hf_llama_config(tmp_path / "m", 28)
  with pytest.raises(RecipeError, match="is not a llama-3.2-3b checkpoint: hidden_size 4096 != 3072"):
    check_recipe(_recipe(model__source=source))
  source = _hf_llama_config(tmp_path / "3b", 28, hidden=3072, mlp=8192, heads=24)
  with pytest.raises(RecipeError, match="encoder is pretrained CLIP ViT-L/14-336: set --config.vit.source"):
    check_recipe(_recipe(model__source=source))
  with pytest.raises(RecipeError, match=r"Datasets \['paper_text'\] are not under data.data_dir=.*configs/paper/data.py"):
    check_recipe(_recipe("llama-3.2-3b,translator", model__source=source, data__data_dir=str(tmp_path)))


def test_70b_stage_3_on_8_devices_fails_before_compiling_and_names_the_fsdp_size():
  # Full size, shapes only: 70.6B trainable bf16 params + AdamW state + fp32 gradient accumulators.
  config = _recipe("llama-3.1-70b,finetune_decoder", dry_run=True, hardware__device="h100-80gb")
  with pytest.raises(PlanDoesNotFit, match=r"llama-3.1-70b,finetune_decoder \(full target\) needs ~82.\d GiB per "
                                           r"device before activations on 8 devices .* h100-80gb has 79.6 GiB .* "
                                           r"use fsdp >= 16 \(at least 16 devices\); activations come on top"):
    launch(config)
  config = _recipe("llama-3.2-3b,finetune_encoder", dry_run=True, width_divisor=32, hardware__memory_gib=1e-4)
  with pytest.raises(PlanDoesNotFit, match="does not shrink with fsdp alone is too big: lower train.per_device_batch"):
    launch(config)


def _tiny_clip(path, width=8, mlp=16, layers=2, image=28, patch=14):
  """A transformers-format CLIP vision checkpoint (config.json + model.safetensors), numpy-made."""
  rng = np.random.default_rng(0)
  t = lambda *shape: rng.normal(size=shape).astype(np.float32)
  tensors = {"embeddings.patch_embedding.weight": t(width, 3, patch, patch), "embeddings.class_embedding": t(width),
             "embeddings.position_embedding.weight": t((image // patch) ** 2 + 1, width),
             "pre_layrnorm.weight": t(width), "pre_layrnorm.bias": t(width),
             "post_layernorm.weight": t(width), "post_layernorm.bias": t(width)}
  for i in range(layers):
    p = f"encoder.layers.{i}."
    for norm in ("layer_norm1", "layer_norm2"):
      tensors.update({p + f"{norm}.weight": t(width), p + f"{norm}.bias": t(width)})
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      tensors.update({p + f"self_attn.{proj}.weight": t(width, width), p + f"self_attn.{proj}.bias": t(width)})
    tensors.update({p + "mlp.fc1.weight": t(mlp, width), p + "mlp.fc1.bias": t(mlp),
                    p + "mlp.fc2.weight": t(width, mlp), p + "mlp.fc2.bias": t(width)})
  path.mkdir()
  save_file(tensors, str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps({
      "model_type": "clip_vision_model", "hidden_size": width, "intermediate_size": mlp, "num_hidden_layers": layers,
      "num_attention_heads": 2, "image_size": image, "patch_size": patch, "hidden_act": "quick_gelu"}))
  return tensors


def test_pretrained_encoder_loads_in_the_configs_dtype_and_refuses_other_shapes(tmp_path):
  tensors = _tiny_clip(tmp_path / "clip")
  block = dict(image_size=28, patch_size=14, width=8, depth=2, heads=2, mlp_dim=16, variant="clip",
               dtype="bfloat16", param_dtype="bfloat16", remat="full")
  vit = vit_from_config(ml_collections.ConfigDict(block))  # the recipe's vit block keys are honoured
  assert (vit.dtype, vit.param_dtype, vit.remat) == (jnp.bfloat16, jnp.bfloat16, "full")
  img = pretrained_encoder(str(tmp_path / "clip"), vit)
  kernel = img["blocks"]["mlp"]["fc1"]["kernel"]
  assert kernel.shape == (2, 8, 16) and kernel.dtype == jnp.bfloat16
  np.testing.assert_allclose(kernel[1].astype(np.float32), tensors["encoder.layers.1.mlp.fc1.weight"].T, rtol=1e-2)
  with pytest.raises(ValueError, match="depth: checkpoint 2 != config 3"):
    pretrained_encoder(str(tmp_path / "clip"), vit_from_config(ml_collections.ConfigDict({**block, "depth": 3})))
