"""The main job: the surrogate route on the embedded default, end to end.

1. build the surrogate of the target from the plan and measure it untrained (a plain truncation);
2. stage 0: train the translator on text (runs/surrogate/translator), and measure it again;
3. stage 1: adapter, start/end of image, encoder post-norm and translator on image + text;
4. stage 2: adapter, start/end of image and the encoder on images, translator frozen; this writes
   the encoder package that grafting onto the full target consumes.

Each stage is a resumable run directory: rerunning the command continues where it stopped and
skips finished stages. Fidelity is KL(target || surrogate) of next-token distributions on held-out
chat text, and both models' replies to a few prompts.
"""
from __future__ import annotations

import json
import os

import numpy as np

from graft_jax.config_lib import train_config
from graft_jax.cost import decoder_cost
from graft_jax.data.padding import right_pad
from graft_jax.data.synthetic_text import make_chat
from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.generation import generate
from graft_jax.fidelity import next_token_kl
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.train.loop import train
from graft_jax.train.model_setup import load_previous_stage

HELD_OUT_SPLIT = 1  # synthetic chat split index held out for evaluation ("val"; 0 is "train")
STAGES = ("translator", "pretrain", "finetune_encoder")


def measure(config, target, surrogate, plan, model_config, tokenizer) -> dict:
  """KL(target || surrogate) on held-out chats and the surrogate's replies to the prompts."""
  chats = [make_chat(config.seed, HELD_OUT_SPLIT, i)["messages"] for i in range(config.num_eval_chats)]
  samples = [encode_conversation(c, tokenizer, config.template, "standard").ids for c in chats]
  kls = []
  for i in range(0, len(samples), config.eval_batch_size):
    ids, mask = right_pad(samples[i:i + config.eval_batch_size], model_config.pad_token_id or 0)
    kls.append(next_token_kl(target, surrogate, model_config, plan.segments, ids, mask))
  prompts = [encode_conversation([{"role": "user", "content": p}], tokenizer, config.template, "standard",
                                 add_generation_prompt=True).ids.tolist() for p in config.prompts]
  outs = generate(surrogate, model_config, prompts, max_new_tokens=config.max_new_tokens,
                  eos_ids=end_token_ids(tokenizer, model_config), segments=plan.segments)
  return {"kl_nats_per_token": float(np.concatenate(kls).mean()),
          "replies": [tokenizer.decode(o, skip_special_tokens=True) for o in outs]}


def stage_config(config, stage: str, init_from: str):
  """train_config(stage) with the job's model, plan, encoder, data and budget."""
  cfg = train_config(stage, config.model.preset)
  cfg.model = config.model
  cfg.template = config.template
  cfg.ranges = config.ranges
  cfg.vit = config.vit
  cfg.data = config.data
  cfg.run_dir = os.path.join(config.run_dir, stage)
  cfg.init_from = init_from
  cfg.train.steps = int(dict(config.steps)[stage])
  cfg.train.batch_size = config.batch_size
  return cfg


def run(config) -> dict:
  target, model_config, tokenizer = load_from_config(config.model)
  plan = SurrogatePlan.create(model_config.num_layers, [tuple(r) for r in config.ranges])
  surrogate = make_surrogate(target, plan)
  target_cost, surrogate_cost = decoder_cost(model_config), decoder_cost(model_config, plan.segments)
  print(f"plan: {plan.describe()}")
  print(f"layers {target_cost.layers} -> {surrogate_cost.layers}; params {target_cost.params / 1e6:.1f}M -> "
        f"{surrogate_cost.params / 1e6:.1f}M; forward FLOPs x"
        f"{surrogate_cost.fwd_flops_per_token / target_cost.fwd_flops_per_token:.2f}")
  result = {"plan": plan.to_dict(), "target_params": target_cost.params,
            "surrogate_params": surrogate_cost.params, "prompts": list(config.prompts)}
  result["untrained"] = measure(config, target, surrogate, plan, model_config, tokenizer)
  print(f"untrained surrogate: KL(target || surrogate) {result['untrained']['kl_nats_per_token']:.3f} nats/token")

  previous, stages = "", {}
  for stage in STAGES:
    if not int(dict(config.steps)[stage]):
      continue
    out = train(stage_config(config, stage, previous))
    stages[stage] = {"run_dir": out["run_dir"], "final_step": out["final_step"]}
    previous = out["run_dir"]
    if stage == "translator":
      trained = load_previous_stage({"llm": surrogate}, plan, previous)["llm"]
      result["trained_translator"] = measure(config, target, trained, plan, model_config, tokenizer)
      print(f"trained translator: KL(target || surrogate) "
            f"{result['trained_translator']['kl_nats_per_token']:.3f} nats/token")
  result["stages"] = stages
  os.makedirs(config.run_dir, exist_ok=True)
  with open(os.path.join(config.run_dir, "surrogate.json"), "w") as f:
    json.dump(result, f, indent=1)
  for i, prompt in enumerate(config.prompts):
    print(f"\nQ: {prompt}")
    for name in ("untrained", "trained_translator"):
      if name in result:
        print(f"  {name:18s} {result[name]['replies'][i]!r}")
  return result
