"""A training stage's model and params as shapes only: what model_setup.build_stage_model builds,
without reading or allocating a weight (jax.eval_shape), optionally shrunk in width for tests."""
from __future__ import annotations

import dataclasses

import jax
import ml_collections

from graft_jax.models.config import LlamaConfig, full_segments
from graft_jax.models.llama import abstract_params
from graft_jax.models.presets import preset
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.lora import LoraConfig, init_lora
from graft_jax.train.model_setup import init_encoder_side, vit_from_config
from graft_jax.train.stages import Stage, get_stage


@dataclasses.dataclass
class AbstractStage:
  stage: Stage
  model: VLM
  params: dict                 # jax.ShapeDtypeStruct leaves: {"llm"} or {"img", "proj", "llm"[, "lora"]}
  plan: SurrogatePlan | None   # None: the full target
  llm_config: LlamaConfig      # the target's (shrunk when width_divisor > 1)
  lora: LoraConfig

  @property
  def segments(self):
    return self.plan.segments if self.plan else full_segments(self.llm_config)


def _divide(value: int, divisor: int, what: str) -> int:
  if value % divisor:
    raise ValueError(f"width_divisor={divisor} does not divide {what}={value}")
  return value // divisor


def shrink_llm(config: LlamaConfig, divisor: int) -> LlamaConfig:
  """Widths / divisor (hidden, MLP, head_dim; heads, layers kept); the vocabulary / divisor rounded
  up to a multiple of 128, so it still shards."""
  if divisor == 1:
    return config
  return config.replace(hidden_size=_divide(config.hidden_size, divisor, "hidden_size"),
                        intermediate_size=_divide(config.intermediate_size, divisor, "intermediate_size"),
                        head_dim=_divide(config.head_dim, divisor, "head_dim"),
                        vocab_size=-(-config.vocab_size // divisor // 128) * 128)


def shrink_vit(vit_cfg, divisor: int) -> ml_collections.ConfigDict:
  """A copy of a `vit` block with width and MLP / divisor (heads, depth, image size kept)."""
  out = ml_collections.ConfigDict(vit_cfg.to_dict())
  if divisor > 1:
    out.width = _divide(vit_cfg.width, divisor, "vit.width")
    out.mlp_dim = _divide(vit_cfg.mlp_dim, divisor, "vit.mlp_dim")
    _divide(out.width, vit_cfg.heads, "the shrunk vit.width's heads")
  return out


def llm_config_for(config) -> LlamaConfig:
  """The preset's shapes with the config's numerics, shrunk by width_divisor."""
  numerics = {k: config.model[k] for k in ("param_dtype", "dtype", "remat_policy")}
  return shrink_llm(preset(config.model.preset).replace(**numerics), config.get("width_divisor", 1))


def abstract_stage(config) -> AbstractStage:
  """The stage's VLM and its starting params' shapes and dtypes (as build_stage_model makes them)."""
  stage = get_stage(config.stage)
  llm_config = llm_config_for(config)
  plan = SurrogatePlan.create(llm_config.num_layers, [tuple(r) for r in config.ranges]) if config.ranges else None
  segments = plan.segments if plan else None
  vit = vit_from_config(shrink_vit(config.vit, config.get("width_divisor", 1)))
  model = VLM(vit, llm_config, segments, config.vit.projector_depth)
  params = {"llm": abstract_params(llm_config, segments)}
  if not stage.decoder_only:
    params = {**jax.eval_shape(lambda: init_encoder_side(model, config.vit.seed)), **params}
  lora = LoraConfig.from_config(config.lora)
  if lora.enabled:
    params["lora"] = jax.eval_shape(lambda p: init_lora(p, lora, jax.random.key(0)), params)
  return AbstractStage(stage, model, params, plan, llm_config, lora)
