"""Training the encoder side against several surrogates at once (issue 9's lever).

  config.ranges = ((12, 28),)                                  # surrogate 0: the stage's own
  config.mix = ((((26, 28),), "runs/x/translator_26_28"),)     # surrogate 1: its plan and translator

Each mix entry is a plan of the same target and the run directory of that plan's trained translator
(stage 0 or stage 1). Step s trains against surrogate s mod K, K = 1 + len(mix), so each takes 1/K
of the steps and the decoder's cost per step is the mean of theirs (`mix_flops_saved`). Only the
encoder side may train in a mix: every surrogate updates the same trainable tree, so a trainable
translator would be trained by the others' gradients.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from graft_jax.cost import decoder_cost
from graft_jax.models.config import LlamaConfig
from graft_jax.models.vlm import VLM
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.train.model_setup import StageModel, load_previous_stage


@dataclasses.dataclass
class MixMember:
  """One more surrogate: its VLM, its full starting params (the stage's encoder side, its own
  decoder) and its plan."""
  model: VLM
  params: dict
  plan: SurrogatePlan


def plans_of(num_layers: int, ranges_list: Sequence) -> list[SurrogatePlan]:
  """A plan per entry of a job's `mix_ranges` (each a tuple of translator ranges)."""
  return [SurrogatePlan.create(num_layers, [tuple(r) for r in ranges]) for ranges in ranges_list]


def mix_plans(num_layers: int, mix: Sequence) -> list[tuple[SurrogatePlan, str]]:
  """(plan, translator run dir) of each entry of a config's `mix`, with a clear error on a malformed one."""
  out = []
  for entry in mix:
    if len(entry) != 2 or not isinstance(entry[1], str) or not entry[1]:
      raise ValueError(f"Each mix entry is (ranges, translator run dir), e.g. (((26, 28),), 'runs/t'); got {entry!r}")
    out.append((plans_of(num_layers, [entry[0]])[0], entry[1]))
  return out


def check_mix(config, decoder_only: bool, trainable_paths: Sequence[str]) -> None:
  """Refuses a mix on a stage it cannot serve: a text-only or full-target stage, or one that
  trains decoder weights (translator, LoRA) as well as the encoder side."""
  if not config.get("mix"):
    return
  if decoder_only or not config.ranges:
    raise ValueError("config.mix trains the encoder side against several surrogates: it needs a stage "
                     "with images on a surrogate (config.ranges set), e.g. finetune_encoder")
  decoder = [p for p in trainable_paths if p.split("/", 1)[0] in ("llm", "lora")]
  if decoder:
    raise ValueError(f"config.mix trains the encoder side only, but the trainable rules select decoder "
                     f"weights (e.g. {decoder[0]}); drop them from config.trainable")


def mix_members(config, setup: StageModel) -> list[MixMember]:
  """The surrogates of config.mix, each with the encoder side `setup` starts from and its own
  decoder: the target cut by its plan, with the translator of its run dir."""
  members = []
  for plan, run_dir in mix_plans(setup.llm_config.num_layers, config.get("mix", ())):
    llm = load_previous_stage({"llm": make_surrogate(setup.target_llm, plan)}, plan, run_dir)["llm"]
    model = VLM(setup.model.vit, setup.llm_config, plan.segments, setup.model.projector_depth)
    members.append(MixMember(model, {**setup.params, "llm": llm}, plan))
  return members


def mix_flops_saved(llm_config: LlamaConfig, plans: Sequence[SurrogatePlan], seq_len: int = 4096) -> float:
  """1 - (mean forward decoder FLOPs per token over `plans`, each taking an equal share of the
  steps) / the full target's, at sequence length `seq_len`."""
  full = decoder_cost(llm_config, seq_len=seq_len).fwd_flops_per_token
  mean = sum(decoder_cost(llm_config, p.segments, seq_len=seq_len).fwd_flops_per_token for p in plans) / len(plans)
  return 1 - mean / full
