"""The training runs of the reproduction (method.md section 7), as stage configs for train().

Every run is a resumable run directory under the job's run_dir:
  translator/                       stage 0 on text, shared by all seeds (the surrogate itself)
  seed<s>/pretrain/                 stage 1 (optional, steps.pretrain > 0)
  seed<s>/encoder_surrogate/        (a)/(b) stage 2 against the trained surrogate
  seed<s>/encoder_target/           (c) stage 2 directly on the full target
  seed<s>/encoder_truncation/       (d) stage 2 against the plain truncation (translator untrained)
  transfer/adapter/                 (f) the usual route's start: the adapter alone on the target
  transfer/from_graft/, transfer/from_adapter/   (f) stage 3 from either start
"""
from __future__ import annotations

import os

import ml_collections

from graft_jax.config_lib import train_config

# Every encoder weight trains, the ViT at `encoder_lr_mult` x the adapter's lr (the paper's "last 8
# of 24 CLIP layers" is for a 24-layer CLIP; ours has 4).
ENCODER_RULES = ("proj/.*", "img/.*")
DECODER_RULES = ("llm/.*",) + ENCODER_RULES
CONDITION_DIRS = {"surrogate": "encoder_surrogate", "target": "encoder_target",
                  "truncation": "encoder_truncation"}


def stage_config(job, stage: str, run_dir: str, *, steps: int, lr: float, seed: int,
                 on_surrogate: bool, init_from: str = "",
                 trainable: tuple[str, ...] | None = None) -> ml_collections.ConfigDict:
  """train_config(stage) with the job's model, encoder, data and batch; the plan only if
  `on_surrogate`; the encoder initialised and the data shuffled from `seed`."""
  cfg = train_config(stage, job.model.preset)
  cfg.model = job.model
  cfg.template = job.template
  cfg.ranges = tuple(tuple(r) for r in job.ranges) if on_surrogate else ()
  cfg.vit = job.vit.copy_and_resolve_references()
  cfg.vit.seed = seed
  cfg.data = job.data
  cfg.run_dir = run_dir
  cfg.init_from = init_from
  if trainable is not None:
    cfg.trainable = trainable
  cfg.train.update({"steps": int(steps), "batch_size": job.batch_size, "lr": float(lr), "seed": seed,
                    "encoder_lr_mult": float(job.encoder_lr_mult)})
  cfg.checkpoint.update({"save_every": max(int(steps), 1), "keep_last": 1})
  return cfg


def translator_config(job, run_dir: str | None = None, ranges: tuple | None = None) -> ml_collections.ConfigDict:
  """Stage 0 by cross-entropy into `run_dir` (default run_dir/translator) for `ranges` (default the job's)."""
  cfg = stage_config(job, "translator", run_dir or os.path.join(job.run_dir, "translator"), steps=job.steps.translator,
                     lr=job.lr.translator, seed=0, on_surrogate=True)
  if ranges is not None:
    cfg.ranges = tuple(tuple(r) for r in ranges)
  cfg.train.kl_weight = float(job.translator_kl_weight)
  return cfg


def seed_dir(job, seed: int) -> str:
  return os.path.join(job.run_dir, f"seed{seed}")


def pretrain_config(job, seed: int, translator_dir: str) -> ml_collections.ConfigDict:
  """Stage 1 from the stage-0 translator; with pretrain_kl_weight > 0, anchored by KL to the target."""
  cfg = stage_config(job, "pretrain", os.path.join(seed_dir(job, seed), "pretrain"), steps=job.steps.pretrain,
                     lr=job.lr.pretrain, seed=seed, on_surrogate=True, init_from=translator_dir)
  cfg.train.kl_weight = float(job.get("pretrain_kl_weight", 0.0))
  cfg.train.kl_rows = job.get("pretrain_kl_rows", "text")
  return cfg


def encoder_config(job, seed: int, condition: str, surrogate_dir: str, *, steps: int | None = None,
                   name: str | None = None, data_seed: int | None = None, mix: tuple = ()) -> ml_collections.ConfigDict:
  """Stage 2 for condition "surrogate" (from `surrogate_dir`: the translator, stage-1 or refit
  run), "target" (the full target) or "truncation" (the surrogate with its translator untrained).
  steps / name / data_seed: a chunk of stage 2 (reproduction/refresh.py): its step count, run
  directory name under seed<s>/ and data order (default: steps.encoder, the condition's dir, seed).
  mix: more surrogates for condition "surrogate", as train config's `mix` ((ranges, translator dir), ...)."""
  if condition not in CONDITION_DIRS:
    raise ValueError(f"Unknown encoder condition {condition!r}; known: {sorted(CONDITION_DIRS)}")
  cfg = stage_config(job, "finetune_encoder", os.path.join(seed_dir(job, seed), name or CONDITION_DIRS[condition]),
                     steps=job.steps.encoder if steps is None else steps, lr=job.lr.encoder, seed=seed,
                     on_surrogate=condition != "target",
                     init_from=surrogate_dir if condition == "surrogate" else "", trainable=ENCODER_RULES)
  if data_seed is not None:
    cfg.train.seed = int(data_seed)
  if condition == "surrogate":  # the lever regularises the surrogate-trained encoder alone; (c) stays the baseline
    cfg.train.image_noise = float(job.get("image_noise", 0.0))
    cfg.train.embed_penalty = float(job.get("embed_penalty", 0.0))
    cfg.mix = tuple(mix)
  return cfg


def adapter_config(job) -> ml_collections.ConfigDict:
  """(f) the usual route's first stage: the adapter (and start/end of image) alone on the full
  target, the encoder frozen where it starts (the pretrained encoder of `vit.source`, if set)."""
  return stage_config(job, "finetune_encoder", os.path.join(job.run_dir, "transfer", "adapter"),
                      steps=job.steps.adapter, lr=job.lr.encoder, seed=job.seeds[0], on_surrogate=False,
                      trainable=("proj/.*",))


def transfer_config(job, name: str, init_from: str) -> ml_collections.ConfigDict:
  """(f) stage 3 on the full target from `init_from`, checkpointed every transfer_eval_every steps."""
  cfg = stage_config(job, "finetune_decoder", os.path.join(job.run_dir, "transfer", name),
                     steps=job.steps.transfer, lr=job.lr.transfer, seed=job.seeds[0], on_surrogate=False,
                     init_from=init_from, trainable=DECODER_RULES)
  cfg.checkpoint.update({"save_every": int(job.transfer_eval_every), "keep_last": 1000})
  return cfg
