"""The model and starting params of a training stage: target or surrogate decoder, encoder side,
and the weights an earlier stage trained (`init_from`)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from graft_jax.models.config import LlamaConfig
from graft_jax.models.projector import Projector
from graft_jax.models.vit import VitConfig, init_params as init_vit_params
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.train.checkpoint import RunCheckpointer, describe_plan
from graft_jax.train.encoder_init import pretrained_encoder
from graft_jax.train.lora import DECODER_RULE, LoraConfig, init_lora
from graft_jax.train.partition import merge, split
from graft_jax.train.stages import STAGES, Stage


@dataclasses.dataclass
class StageModel:
  model: VLM
  params: dict                 # full starting params: {"llm"} or {"img", "proj", "llm"[, "lora"]}
  plan: SurrogatePlan | None   # None: the full target
  target_llm: dict             # the full target's decoder params (teacher, grafting)
  llm_config: LlamaConfig
  tokenizer: object


def vit_from_config(vit_cfg) -> VitConfig:
  """The VitConfig of a config's `vit` block. Optional keys (absent from older configs and
  packages' `encoder_config`): dtype, param_dtype, remat, output_norm (default "none")."""
  optional = {k: vit_cfg[k] for k in ("dtype", "param_dtype", "remat", "output_norm") if k in vit_cfg}
  optional.update({k: jnp.dtype(v) for k, v in optional.items() if k.endswith("dtype")})
  return VitConfig(image_size=vit_cfg.image_size, patch_size=vit_cfg.patch_size, width=vit_cfg.width,
                   depth=vit_cfg.depth, heads=vit_cfg.heads, mlp_dim=vit_cfg.mlp_dim,
                   variant=vit_cfg.variant, **optional)


def tokenizer_fingerprint(tokenizer) -> str:
  """A short hash of the vocabulary: grafting refuses an encoder made for another tokenizer."""
  vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
  return hashlib.sha256(vocab.encode()).hexdigest()[:16]


def init_encoder_side(model: VLM, seed: int) -> dict:
  """Random {"img", "proj"} for `model` (the encoder is trained from scratch offline)."""
  img_rng, proj_rng = jax.random.split(jax.random.key(seed))
  img = init_vit_params(model.vit, img_rng)
  proj = Projector(model.llm.hidden_size, model.projector_depth, dtype=model.llm.jnp_dtype,
                   param_dtype=model.llm.jnp_param_dtype).init(
                       proj_rng, jnp.zeros((1, model.vit.num_tokens, model.vit.width)))["params"]
  return nn.meta.unbox({"img": img, "proj": proj})


def starting_encoder(model: VLM, vit_cfg, seed: int) -> dict:
  """{"img", "proj"} a stage starts from: the pretrained encoder of `vit_cfg.source` (a transformers
  CLIP directory) when set, else a random one; the adapter is random either way."""
  encoder = init_encoder_side(model, seed)
  if vit_cfg.get("source"):
    encoder["img"] = pretrained_encoder(vit_cfg.source, model.vit)
  return encoder


def load_previous_stage(params: dict, plan: SurrogatePlan | None, run_dir: str) -> dict:
  """`params` with the trainable weights of the stage run in `run_dir` written over them. Only
  the top-level subtrees `params` has are read: {"llm": ...} takes a stage-1 run's translator
  without its adapter and encoder."""
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"init_from={run_dir!r}: no checkpoints/ there; run that stage first")
  checkpointer = RunCheckpointer(ckpt_dir, keep_last=1, save_every=0)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f"init_from={run_dir!r}: no completed checkpoint; run that stage first")
  trained, meta = checkpointer.restore_trainable()
  checkpointer.close()
  if meta["plan"] is not None and plan is not None and meta["plan"]["ranges"] != plan.to_dict()["ranges"]:
    raise ValueError(f"init_from={run_dir!r} was trained with plan {describe_plan(meta['plan'])}, "
                     f"this stage uses '{plan.describe()}'")
  if meta["plan"] is not None and plan is None and any(k == "llm" for k in trained):
    logging.info("Starting the full target from %s: its translator weights are not used", run_dir)
    trained = {k: v for k, v in trained.items() if k != "llm"}
    spec = [r for r in meta["trainable_spec"] if not r.startswith("llm/")]
  else:
    spec = meta["trainable_spec"]
  trained = {k: v for k, v in trained.items() if k in params}
  spec = [r for r in spec if r.split("/", 1)[0] in params]
  if not trained:
    return params
  _, frozen = split(params, spec)
  logging.info("Loaded %s's trained weights (%s, step %d)", run_dir, meta["stage"], meta["step"])
  return merge(jax.tree.map(np.asarray, trained), frozen)  # host arrays: the loop places them


def build_stage_model(config, stage: Stage) -> StageModel:
  lora = LoraConfig.from_config(config.lora)
  if lora.enabled and (stage.on_surrogate or DECODER_RULE not in stage.trainable):
    allowed = [s.name for s in STAGES.values() if not s.on_surrogate and DECODER_RULE in s.trainable]
    raise ValueError(f"lora.rank={lora.rank}: LoRA adapts the full target's decoder, which only stage "
                     f"{' / '.join(allowed)} trains, not {stage.name!r}; set --config.lora.rank=0")
  target, llm_config, tokenizer = load_from_config(config.model)
  plan = None
  if config.ranges:
    if not stage.on_surrogate:
      raise ValueError(f"Stage {stage.name!r} trains the full target; set --config.ranges='()'")
    plan = SurrogatePlan.create(llm_config.num_layers, [tuple(r) for r in config.ranges])
    logging.info("Surrogate plan: %s", plan.describe())
  model = VLM(vit_from_config(config.vit), llm_config, plan.segments if plan else None,
              config.vit.projector_depth)
  llm = make_surrogate(target, plan) if plan else target
  params = {"llm": llm} if stage.decoder_only else {**starting_encoder(model, config.vit, config.vit.seed), "llm": llm}
  if config.init_from:
    params = load_previous_stage(params, plan, config.init_from)
  if lora.enabled:
    params = {**params, "lora": jax.tree.map(np.asarray, init_lora(params, lora, jax.random.key(config.train.seed)))}
  return StageModel(model, params, plan, target, llm_config, tokenizer)
