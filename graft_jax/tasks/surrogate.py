"""The surrogate route on the embedded default: build the surrogate of the target and measure it.

Today this builds the surrogate from the configured plan, reports its size and FLOPs against the
target, its fidelity (next-token KL to the target on held-out chat text; the translator is still
the untrained copy of its source layer, i.e. a plain truncation), and both models' replies to a
few prompts. Training the translator and the encoder (stages 0-2) plugs in here (issue 5).
"""
from __future__ import annotations

import json
import os

import numpy as np

from graft_jax.cost import decoder_cost
from graft_jax.data.padding import right_pad
from graft_jax.data.synthetic_text import make_chat
from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.generation import generate
from graft_jax.fidelity import next_token_kl
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.model_loading import load_from_config

HELD_OUT_SPLIT = 1  # synthetic chat split index held out for evaluation ("val"; 0 is "train")


def run(config) -> dict:
  params, model_config, tokenizer = load_from_config(config.model)
  plan = SurrogatePlan.create(model_config.num_layers, [tuple(r) for r in config.ranges])
  surrogate = make_surrogate(params, plan)
  target_cost, surrogate_cost = decoder_cost(model_config), decoder_cost(model_config, plan.segments)
  print(f"plan: {plan.describe()}")
  print(f"layers {target_cost.layers} -> {surrogate_cost.layers}; params {target_cost.params / 1e6:.1f}M -> "
        f"{surrogate_cost.params / 1e6:.1f}M; forward FLOPs x{surrogate_cost.fwd_flops_per_token / target_cost.fwd_flops_per_token:.2f}")

  chats = [make_chat(config.seed, HELD_OUT_SPLIT, i)["messages"] for i in range(config.num_eval_chats)]
  samples = [encode_conversation(c, tokenizer, config.template, "standard").ids for c in chats]
  kls = []
  for i in range(0, len(samples), config.batch_size):
    ids, mask = right_pad(samples[i:i + config.batch_size], model_config.pad_token_id or 0)
    kls.append(next_token_kl(params, surrogate, model_config, plan.segments, ids, mask))
  kl = float(np.concatenate(kls).mean())
  print(f"KL(target || surrogate) on {len(samples)} held-out chats: {kl:.3f} nats/token")

  prompts = [encode_conversation([{"role": "user", "content": p}], tokenizer, config.template, "standard",
                                 add_generation_prompt=True).ids.tolist() for p in config.prompts]
  eos = end_token_ids(tokenizer, model_config)
  replies = {}
  for name, p, segments in (("target", params, None), ("surrogate", surrogate, plan.segments)):
    outs = generate(p, model_config, prompts, max_new_tokens=config.max_new_tokens, eos_ids=eos,
                    segments=segments)
    replies[name] = [tokenizer.decode(o, skip_special_tokens=True) for o in outs]
  for i, prompt in enumerate(config.prompts):
    print(f"\nQ: {prompt}\n  target:    {replies['target'][i]!r}\n  surrogate: {replies['surrogate'][i]!r}")

  result = {"plan": plan.to_dict(), "target_params": target_cost.params,
            "surrogate_params": surrogate_cost.params, "kl_nats_per_token": kl,
            "prompts": list(config.prompts), "replies": replies}
  os.makedirs(config.out_dir, exist_ok=True)
  with open(os.path.join(config.out_dir, "surrogate.json"), "w") as f:
    json.dump(result, f, indent=1)
  return result
