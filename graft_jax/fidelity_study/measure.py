"""The fidelity measures (graft_jax/fidelity_measures.py) of one cell's surrogates and trained
encoders, computed after the main job ran the cell and cached under <run_dir>/measures/.

- text, per surrogate (the plain truncation; the trained translator; with stage 1, each seed's
  stage-1 surrogate): KL(target || surrogate) on the main job's held-out chats (`num_eval_chats`;
  the mean of per-chat means, as the main job reports it, and taken from its results where it
  has it) and the hidden-state distance before the last layer (relative L2 and cosine, means
  over positions);
- image, per seed and encoder (trained on the surrogate; trained on the target), against that
  seed's surrogate, on held-out images (the shapes "val" split, whole conversations, "standard"
  mask): KL at the answer positions, hidden distance over all positions and over the image slot,
  and the image embeddings' statistics against the token embeddings (soi/eoi left out).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np

from graft_jax.data.readers import read_llava_json
from graft_jax.fidelity import next_token_kl
from graft_jax.fidelity_data import held_out_chats, image_batches, text_batches
from graft_jax.fidelity_measures import (PositionMean, decode_nearest, image_embedding_stats,
                                         image_sequence_fidelity, text_hidden_distance)
from graft_jax.models.vlm import VLM
from graft_jax.reproduction import runs
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.tasks.surrogate import cached, package_of, trained_llm
from graft_jax.train.mix import mix_flops_saved, plans_of
from graft_jax.train.model_setup import vit_from_config

SHORT_SEQ = 64  # the offline samples' padded length: FLOPs saved there as well as at the main job's 4096
ENCODERS = {"surrogate_encoder": "surrogate", "target_encoder": "target"}  # name -> main-job condition


@dataclasses.dataclass(frozen=True)
class MeasureSettings:
  """How much held-out data the measures use."""
  images: int = 64       # held-out images (shapes "val" split); the chats are the main job's
  batch_size: int = 8
  nearest_shown: int = 8  # most frequent nearest tokens listed per encoder


def text_measures(target_llm: dict, surrogate_llm: dict, llm_config, plan: SurrogatePlan, chats, batch_size: int,
                  pad_id: int, kl: float | None = None) -> dict:
  """{"kl": nats/token (mean of per-chat means; `kl` when the main job measured it on these
  chats), "rel_l2", "cos": means over positions}."""
  kls, rel, cos = [], PositionMean(), PositionMean()
  for tokens, mask in text_batches(chats, batch_size, pad_id):
    if kl is None:
      kls.append(next_token_kl(target_llm, surrogate_llm, llm_config, plan.segments, tokens, mask))
    r, c = text_hidden_distance(target_llm, surrogate_llm, llm_config, plan.segments, tokens, mask)
    rel.add(r, mask)
    cos.add(c, mask)
  return {"kl": float(np.concatenate(kls).mean()) if kl is None else float(kl), "rel_l2": rel.mean, "cos": cos.mean}


def image_measures(model: VLM, encoder: dict, target_llm: dict, surrogate_llm: dict, plan: SurrogatePlan,
                   batches: list[dict], tokenizer, shown: int) -> dict:
  """KL at answer positions, hidden distance (all positions / image slot), embedding statistics."""
  acc = {k: PositionMean() for k in ("kl", "rel_l2", "cos", "rel_l2_image", "cos_image")}
  embeddings = []
  for batch in batches:
    out = image_sequence_fidelity(model, encoder, target_llm, surrogate_llm, plan.segments, batch)
    acc["kl"].add(out["kl"], out["kl_keep"])
    for name, mask in (("", batch["valid"]), ("_image", batch["image_mask"])):
      acc["rel_l2" + name].add(out["rel_l2"], mask)
      acc["cos" + name].add(out["cos"], mask)
    emb = out["image_embeddings"][:, 1:-1]  # soi/eoi left out
    embeddings.append(emb.reshape(-1, emb.shape[-1]))
  stats = image_embedding_stats(np.concatenate(embeddings), np.asarray(target_llm["embed"]["embedding"]), top=shown)
  stats["nearest_tokens"] = decode_nearest(stats, tokenizer)
  return {**{k: v.mean for k, v in acc.items()}, "embeddings": stats}


def measure_cell(job, settings: MeasureSettings = MeasureSettings(), text_kl: Mapping[str, float] | None = None
                 ) -> dict:
  """{"text": {surrogate name: text_measures}, "image": {seed: {encoder name: image_measures}},
  "flops_saved_short": the surrogate's forward FLOPs saved per token at T=SHORT_SEQ} for the cell
  whose main job `job` has run; each entry cached in <run_dir>/measures/.
  text_kl: the main job's results["fidelity"] ({"untrained", "translator"}: KL on the same chats)."""
  text_kl = text_kl or {}
  target, llm_config, tokenizer = load_from_config(job.model)
  plan = SurrogatePlan.create(llm_config.num_layers, [tuple(r) for r in job.ranges])
  truncation = make_surrogate(target, plan)
  pad_id = llm_config.pad_token_id or 0
  vit = vit_from_config(job.vit)
  model = VLM(vit, llm_config, None, job.vit.projector_depth)
  out_dir = os.path.join(job.run_dir, "measures")
  chats = held_out_chats(tokenizer, job.template, job.data.seed, job.num_eval_chats)
  samples, _ = read_llava_json(os.path.join(job.data.out_dir, "shapes", "val.json"), image_check="exists")
  batches = list(image_batches(samples[:settings.images], tokenizer, job.template, vit.image_size, model.image_len,
                               settings.batch_size, pad_id))
  text = lambda name, llm: cached(os.path.join(out_dir, f"text_{name}.json"), lambda: text_measures(
      target, llm, llm_config, plan, chats, settings.batch_size, pad_id, text_kl.get(name)))
  translator_dir = os.path.join(job.run_dir, "translator")
  surrogate = trained_llm(truncation, plan, translator_dir)
  result = {"text": {"untrained": text("untrained", truncation), "translator": text("translator", surrogate)},
            "image": {}}
  for seed in job.seeds:
    seed_surrogate = surrogate
    if job.steps.pretrain:
      seed_surrogate = trained_llm(truncation, plan, runs.pretrain_config(job, seed, translator_dir).run_dir)
      result["text"][f"seed{seed}_stage1"] = text(f"seed{seed}_stage1", seed_surrogate)
    result["image"][str(seed)] = {
        name: cached(os.path.join(out_dir, f"image_seed{seed}_{name}.json"), lambda c=condition: image_measures(
            model, package_of(os.path.join(runs.seed_dir(job, seed), runs.CONDITION_DIRS[c])), target,
            seed_surrogate, plan, batches, tokenizer, settings.nearest_shown))
        for name, condition in ENCODERS.items() if condition in job.conditions}
  mix = plans_of(llm_config.num_layers, job.get("mix_ranges", ()))
  result["flops_saved_short"] = mix_flops_saved(llm_config, [plan, *mix], seq_len=SHORT_SEQ)
  return result
