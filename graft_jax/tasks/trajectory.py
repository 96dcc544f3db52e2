"""Prediction trajectory of a decoder on chat text, its plot, and the suggested translator range."""
from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from graft_jax.data.padding import right_pad
from graft_jax.data.synthetic_text import make_chat
from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.generation import generate
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.trajectory import find_transition, full_vocab_kl, layer_readout, normalized_kl
from graft_jax.trajectory_plot import plot_trajectory


def chat_samples(config, params, model_config, tokenizer) -> list[np.ndarray]:
  """Token ids of chat samples: questions from graft_jax's synthetic chat set, answered either by
  the dataset (`text_source="dataset"`) or by the model itself (`"self"`, the default: its own
  answers are what its layers are tuned to predict)."""
  chats = [make_chat(config.seed, 0, i)["messages"][:2] for i in range(config.num_samples)]
  if config.text_source == "self":
    prompts = [encode_conversation(c[:1], tokenizer, config.template, "standard",
                                   add_generation_prompt=True).ids.tolist() for c in chats]
    answers = []
    for i in range(0, len(prompts), config.batch_size):
      answers += generate(params, model_config, prompts[i:i + config.batch_size],
                          max_new_tokens=config.max_answer_tokens,
                          eos_ids=end_token_ids(tokenizer, model_config))
    chats = [[c[0], {"role": "assistant", "content": tokenizer.decode(a, skip_special_tokens=True).strip()}]
             for c, a in zip(chats, answers)]
    chats = [c for c in chats if c[1]["content"]]  # an empty answer has nothing to predict
  elif config.text_source != "dataset":
    raise ValueError(f"text_source must be 'self' or 'dataset', got {config.text_source!r}")
  return [encode_conversation(c, tokenizer, config.template, "standard").ids for c in chats]


def run(config) -> dict:
  params, model_config, tokenizer = load_from_config(config.model)
  samples = chat_samples(config, params, model_config, tokenizer)
  norm_scores, full_scores = [], []
  for i in range(0, len(samples), config.batch_size):
    ids, mask = right_pad(samples[i:i + config.batch_size], model_config.pad_token_id or 0)
    readout = layer_readout(params, model_config, ids, mask)
    norm_scores.append(normalized_kl(readout.true_prob, readout.valid))
    full_scores.append(full_vocab_kl(readout.full_kl, readout.valid))
  normalized, full = np.concatenate(norm_scores, 1), np.concatenate(full_scores, 1)
  transition = find_transition(normalized)
  os.makedirs(config.out_dir, exist_ok=True)
  title = (f"{config.model.preset}: prediction trajectory, {len(samples)} chat samples "
           f"({config.text_source} answers)")
  plot_trajectory(os.path.join(config.out_dir, "trajectory.png"), normalized, full, transition, title)
  result = {
      "model": config.model.preset, "num_layers": model_config.num_layers, "samples": len(samples),
      "text_source": config.text_source,
      "mean_tokens": float(np.mean([len(s) for s in samples])),
      "normalized_kl_mean": normalized.mean(1).round(4).tolist(),
      "normalized_kl_std": normalized.std(1).round(4).tolist(),
      "full_vocab_kl_mean": full.mean(1).round(4).tolist(),
      "transition_layer": transition.layer,
      "suggested_range": [transition.start, transition.end],
      "spread_before": round(transition.spread_before, 4),
      "spread_after": round(transition.spread_after, 4),
  }
  with open(os.path.join(config.out_dir, "trajectory.json"), "w") as f:
    json.dump(result, f, indent=1)
  logging.info("Trajectory written to %s", config.out_dir)
  print(f"transition point: layer {transition.layer}; suggested translator range "
        f"[{transition.start}, {transition.end}] (sample spread {transition.spread_before:.3f} before, "
        f"{transition.spread_after:.3f} after)")
  print("layer  norm-KL mean (std)   full-vocab KL")
  for l in range(model_config.num_layers):
    print(f"{l:5d}  {normalized[l].mean():8.3f} ({normalized[l].std():.3f})   {full[l].mean():8.3f}")
  return result
