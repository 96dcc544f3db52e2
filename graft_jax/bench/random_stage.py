"""Random weights in real shapes for the GPU check (experiments/gpu_check.py): a decoder preset
or a tiny decoder, a CLIP ViT-L/14-336-shaped or tiny encoder, and a stage's params, initialised
straight on the device in the dtype each part will live in (frozen decoders in bf16, trained ones
as fp32 master copies), so no full-size copy of the target exists for a surrogate stage."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.bench.jax_stages import BenchStage
from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import init_params as init_llm_params
from graft_jax.models.presets import preset
from graft_jax.models.projector import Projector
from graft_jax.models.vit import VitConfig, init_params as init_vit_params
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan

# CLIP ViT-L/14 at 336 px: 24 x 24 patches + CLS = 577 tokens, 579 embeddings with soi/eoi.
CLIP_L14_336 = VitConfig(image_size=336, patch_size=14, width=1024, depth=24, heads=16, mlp_dim=4096,
                         variant="clip")
TINY_VIT = VitConfig(image_size=28, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64, variant="clip")
TINY_LLM = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4,
                       num_kv_heads=2, head_dim=16, tie_word_embeddings=True)
RELEASED_RANGES = {"smollm2-135m": ((19, 28),), "llama-3.2-3b": ((16, 26),), "llama-3.1-8b": ((17, 30),),
                   "llama-3.1-70b": ((40, 78),)}
TINY_RANGES = ((1, 2),)


def stage_configs(model: str, *, dtype: str = "bfloat16", remat: str = "none", attention: str = "xla",
                  vit_remat: str = "none") -> tuple[LlamaConfig, VitConfig, SurrogatePlan]:
  """(decoder config, encoder config, surrogate plan) for `model` = a preset name or "tiny"."""
  if model == "tiny":
    llm, vit, ranges = TINY_LLM, TINY_VIT, TINY_RANGES
  else:
    llm, vit, ranges = preset(model), CLIP_L14_336, RELEASED_RANGES[model]
  llm = llm.replace(dtype=dtype, remat_policy=remat, attention_impl=attention)
  vit = dataclasses.replace(vit, dtype=jnp.dtype(dtype), remat=vit_remat)
  return llm, vit, SurrogatePlan.create(llm.num_layers, ranges)


def random_encoder_side(model: VLM, seed: int) -> dict:
  """Random {"img", "proj"} for `model` (as train/model_setup.py's init_encoder_side, without the
  checkpoint and tokenizer imports that module needs: the GPU machine has only jax/flax/optax)."""
  img_rng, proj_rng = jax.random.split(jax.random.key(seed))
  proj = Projector(model.llm.hidden_size, model.projector_depth, dtype=model.llm.jnp_dtype,
                   param_dtype=model.llm.jnp_param_dtype).init(
                       proj_rng, jnp.zeros((1, model.vit.num_tokens, model.vit.width)))["params"]
  return nn.meta.unbox({"img": init_vit_params(model.vit, img_rng), "proj": proj})


def random_stage_params(stage: BenchStage, llm: LlamaConfig, vit: VitConfig, plan: SurrogatePlan, *,
                        frozen_dtype: str = "bfloat16", seed: int = 0) -> tuple[VLM, dict]:
  """(model, params) of `stage` with random weights on the default device. The decoder is made
  in the surrogate's layout directly (for on_surrogate stages) and in `frozen_dtype` unless the
  stage trains it (rules starting with "llm/")."""
  segments = plan.segments if stage.on_surrogate else None
  model = VLM(vit, llm, segments)
  trains_llm = any(rule.startswith("llm/") for rule in stage.trainable)
  init_cfg = llm.replace(param_dtype="float32" if trains_llm else frozen_dtype, attention_impl="xla")
  key = jax.random.key(seed)
  decoder = jax.jit(lambda k: init_llm_params(init_cfg, k, segments))(key)
  if stage.decoder_only:
    return model, {"llm": decoder}
  encoder = jax.jit(lambda: random_encoder_side(model, seed + 1))()
  return model, {**encoder, "llm": decoder}


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
