"""Stage 2 against the surrogate with the translator refitted on the encoder's own image sequences.

A translator fitted on text (stage 0) only ever saw the hidden states of text. The encoder's image
embeddings put the shallow layers' states somewhere else, where the translator and the dropped
layers it stands for part ways: an encoder trained against it learns to drive the surrogate and
nothing else. With `refresh.rounds` = R > 0, stage 2's `steps.encoder` steps are split into R + 1
chunks; after each chunk but the last the full target runs *forward only* over `refresh.images`
training samples with the current encoder's embeddings spliced in (plus `refresh.text` chats, so
the fit keeps text), and the translator is refitted on those hidden states (translator_fit.py).
The encoder never gets a gradient through the target: what is grafted is still trained against
the surrogate alone. The target's forward passes are counted in the route's compute.

Run directories under seed<s>/: encoder_surrogate_r<r>/ (chunk r), refit_r<r>/ (the refitted
translator, with the encoder of chunk r carried beside it so chunk r+1 starts from both), and
encoder_surrogate/ (the last chunk: the encoder that is scored and grafted).
"""
from __future__ import annotations

import os
from typing import Callable

from graft_jax.data.readers import read_llava_json
from graft_jax.fidelity_data import image_batches
from graft_jax.models.vlm import VLM
from graft_jax.reproduction import runs
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.checkpoint import load_encoder_package
from graft_jax.train.loop import train
from graft_jax.train.model_setup import load_previous_stage
from graft_jax.translator_fit import image_teacher_pairs, run_translator_fit, teacher_pairs

HELD_OUT_IMAGES = 32  # validation samples for the refit's held-out error


def chunk_steps(total: int, rounds: int) -> list[int]:
  """`total` stage-2 steps split into rounds + 1 chunks, the remainder in the last."""
  if rounds < 0 or total < rounds + 1:
    raise ValueError(f"refresh.rounds={rounds} needs at least {rounds + 1} stage-2 steps, got {total}")
  base = total // (rounds + 1)
  return [base] * rounds + [total - base * rounds]


def _samples(config, split: str) -> list:
  samples, _ = read_llava_json(os.path.join(config.data.out_dir, "shapes", f"{split}.json"), image_check="exists")
  return samples


def surrogate_llm(truncation: dict, plan: SurrogatePlan, run_dir: str, encoder: dict) -> dict:
  """The surrogate decoder of a stage-0 or refit run: `truncation` with its translators loaded
  (`encoder` {"img", "proj"} of the right shapes stands in for a refit run's carried encoder)."""
  return load_previous_stage({"llm": truncation, **encoder}, plan, run_dir)["llm"]


def surrogate_route(config, seed: int, surrogate_dir: str, target: dict, truncation: dict, plan: SurrogatePlan,
                    llm_config, tokenizer, vit, chat_sequences: Callable, mix: tuple = ()) -> dict:
  """Stage 2 of condition (a)/(b) for `seed`, from the stage-0 (or stage-1) run `surrogate_dir`.
  Returns {"encoder_dir": the final encoder run, "surrogate_dir": the run whose translator the
  last chunk trained against, "stage2_dirs": every chunk's run, "refits": the refits' records}.
  mix: more surrogates trained against at once (runs.encoder_config), only without refits (the main
  job refuses the combination)."""
  rounds = int(config.refresh.rounds)
  if rounds == 0:
    encoder_dir = train(runs.encoder_config(config, seed, "surrogate", surrogate_dir, mix=mix))["run_dir"]
    return {"encoder_dir": encoder_dir, "surrogate_dir": surrogate_dir, "stage2_dirs": [encoder_dir], "refits": []}
  model = VLM(vit, llm_config, None, config.vit.projector_depth)
  train_samples, val_samples = _samples(config, "train"), _samples(config, "val")[:HELD_OUT_IMAGES]
  n = int(config.refresh.images)
  batches = lambda samples: list(image_batches(samples, tokenizer, config.template, vit.image_size, model.image_len,
                                               config.batch_size, llm_config.pad_token_id or 0))
  text = chat_sequences(config, tokenizer, 0, int(config.refresh.text))
  start, dirs, refits = surrogate_dir, [], []
  for r, steps in enumerate(chunk_steps(int(config.steps.encoder), rounds)):
    last = r == rounds
    cfg = runs.encoder_config(config, seed, "surrogate", start, steps=steps,
                              name=None if last else f"encoder_surrogate_r{r}", data_seed=seed + 1000 * r)
    dirs.append(train(cfg)["run_dir"])
    if last:
      break
    encoder = load_encoder_package(os.path.join(dirs[-1], "encoder_package"))[0]
    translators = surrogate_llm(truncation, plan, start, encoder)["segments"]
    init = {name: translators[name] for name in plan.translator_segments}
    offset = ((seed * rounds + r) * n) % max(1, len(train_samples) - n)

    def make_pairs(encoder=encoder, offset=offset):
      image = image_teacher_pairs(model, encoder, target, plan, batches(train_samples[offset:offset + n]))
      held_out = image_teacher_pairs(model, encoder, target, plan, batches(val_samples))
      tokens = float(sum(p["valid"].sum() for p in image)) + float(sum(len(s) for s in text))
      return image + teacher_pairs(target, llm_config, plan, text, config.batch_size), held_out, tokens

    refit = run_translator_fit(os.path.join(runs.seed_dir(config, seed), f"refit_r{r}"), config, plan, llm_config,
                               init, make_pairs, steps=int(config.refresh.steps), lr=float(config.refresh.lr),
                               carry=encoder, carry_spec=runs.ENCODER_RULES)
    refits.append(refit)
    start = refit["run_dir"]
  return {"encoder_dir": dirs[-1], "surrogate_dir": start, "stage2_dirs": dirs, "refits": refits}
