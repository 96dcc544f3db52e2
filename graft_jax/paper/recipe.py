"""The reference recipe (method.md section 4) as train configs, one per target and stage.

  python -m graft_jax.main --config=configs/paper/recipe.py:llama-3.1-70b,finetune_encoder \\
      --config.model.source=/ckpt/Llama-3.1-70B-Instruct \\
      --config.vit.source=/ckpt/clip-vit-large-patch14-336 --config.data.data_dir=/data/tfds

A recipe config is `config_lib.train_config(stage, target)` with the reference's values written
over it, plus the fields of a paper-scale launch (`recipe`, `dry_run`, `width_divisor`,
`hardware`, `train.per_device_batch`), so it stays a valid config of the `train` task.

Common to every stage: AdamW (0.9, 0.999), weight decay 0, clipping at global norm 1.0, linear
warmup over 3% of the steps then cosine to 0, pure bf16 (parameters, compute and optimizer state,
as the reference's `model.to(bfloat16)`), max sequence 4096, activation checkpointing on every
decoder and encoder block, the fixed pre-shuffled data order the converter writes (no shuffling
at load time). The encoder is CLIP ViT-L/14-336: 24 layers, last layer's 577 tokens with the CLS
token kept and the post-layernorm on all of them, a 2-layer GELU adapter, start/end-of-image
embeddings (579 embeddings per image); images are padded to square with CLIP's mean colour,
resized to 336 and normalised with CLIP's mean/std (graft_jax/data/images.py).

Stages (global batch, lr, the reference's per-GPU batch, steps = one epoch of the reference data):

  translator             surrogate, translator only, GenQA text       256, 1e-4, 4, 1953
  pretrain               surrogate, adapter + soi/eoi + post-LN + translator, LLaVA-665K image
                         samples with 500K GenQA evenly interleaved   256, 1e-4, 8, 4393
  finetune_encoder       surrogate, adapter + soi/eoi + last 8 encoder layers + post-LN,
                         LLaVA-665K image samples                     128, 5e-5, 8, 4880
  finetune_decoder       full target, whole decoder + the stage-2 set 128, 5e-5, 4, 4880
  finetune_encoder_full  the control: stage 2 on the full target      128, 2e-4, 8, 4880

The mesh is pure FSDP over every device (`(("data", 1), ("fsdp", -1), ("tensor", 1))`); the
per-device batch is at most `train.per_device_batch` (the reference's per-GPU batch capped by
TARGET_ROWS: 2, 2, 1 rows for 3B, 8B, 70B) and gradient accumulation makes up the global batch
(`train.microbatches = 0`: derived at launch from the device count, graft_jax/paper/checks.py).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from graft_jax.config_lib import train_config

TARGETS: dict[str, tuple[tuple[int, int], ...]] = {  # released translator ranges [a, b]
    "llama-3.2-3b": ((16, 26),),
    "llama-3.1-8b": ((17, 30),),
    "llama-3.1-70b": ((40, 78),),
}

# Rows per device per micro-batch that fit 80 GiB devices at 4096 + 579 positions with XLA's
# attention (it materialises the [heads, T, T] scores; the reference's 8 per GPU assumed flash
# attention): a cap on the stage's own, raised with --config.train.per_device_batch after a dry run.
TARGET_ROWS = {"llama-3.2-3b": 2, "llama-3.1-8b": 2, "llama-3.1-70b": 1}

# Dataset names the converter task (configs/paper/data.py) writes under data.data_dir.
TEXT, MIX, IMAGE = "paper_text", "paper_mix", "paper_image"


@dataclasses.dataclass(frozen=True)
class RecipeStage:
  """One stage of the reference recipe."""
  stage: str                 # graft_jax.train.stages name
  on_surrogate: bool         # False: the full target
  batch_size: int            # global batch (samples per optimizer step)
  lr: float
  per_device_batch: int      # the reference's per-GPU batch (capped per target: TARGET_ROWS)
  steps: int                 # one epoch of the reference data at this batch size
  source: str                # the dataset it reads
  init_from: str             # the recipe stage whose run it starts from ("": none)


STAGES: dict[str, RecipeStage] = {
    # 500K GenQA chats / 256
    "translator": RecipeStage("translator", True, 256, 1e-4, 4, 1953, TEXT, ""),
    # 624.6K LLaVA-665K image samples + 500K GenQA: the reference's 4393 steps
    "pretrain": RecipeStage("pretrain", True, 256, 1e-4, 8, 4393, MIX, ""),
    # 624.6K image samples / 128: the reference's 4880 steps
    "finetune_encoder": RecipeStage("finetune_encoder", True, 128, 5e-5, 8, 4880, IMAGE, "pretrain"),
    "finetune_decoder": RecipeStage("finetune_decoder", False, 128, 5e-5, 4, 4880, IMAGE, "finetune_encoder"),
    "finetune_encoder_full": RecipeStage("finetune_encoder", False, 128, 2e-4, 8, 4880, IMAGE, ""),
}

RUN_ROOT = "runs/paper"


def clip_vit_l14_336() -> ml_collections.ConfigDict:
  """The `vit` block of CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336)."""
  return ml_collections.ConfigDict({
      "image_size": 336, "patch_size": 14, "width": 1024, "depth": 24, "heads": 16, "mlp_dim": 4096,
      "variant": "clip", "projector_depth": 2, "seed": 0,
      "source": "",               # the HF CLIP (vision) directory: fill in
      "dtype": "bfloat16", "param_dtype": "bfloat16", "remat": "full"})


def all_recipes() -> list[str]:
  """Every "target,stage" argument of configs/paper/recipe.py."""
  return [f"{t},{s}" for t in TARGETS for s in STAGES]


def parse_arg(arg: str | None) -> tuple[str, str]:
  """"llama-3.1-70b,finetune_encoder" -> (target, stage); errors name the choices."""
  parts = [p.strip() for p in (arg or "").split(",")]
  if len(parts) != 2:
    raise ValueError(f"configs/paper/recipe.py needs ':TARGET,STAGE', got {arg!r}; "
                     f"targets {sorted(TARGETS)}, stages {list(STAGES)}")
  target, stage = parts
  if target not in TARGETS:
    raise ValueError(f"Unknown recipe target {target!r}; choose from {sorted(TARGETS)}")
  if stage not in STAGES:
    raise ValueError(f"Unknown recipe stage {stage!r}; choose from {list(STAGES)}")
  return target, stage


def recipe_config(target: str, stage: str) -> ml_collections.ConfigDict:
  """The train config of `stage` of the reference recipe on `target` (unlocked; main.py locks it)."""
  target, stage = parse_arg(f"{target},{stage}")
  r = STAGES[stage]
  config = train_config(r.stage, target)
  config.model.update({"param_dtype": "bfloat16", "dtype": "bfloat16", "remat_policy": "full"})
  config.vit = clip_vit_l14_336()
  config.ranges = TARGETS[target] if r.on_surrogate else ()
  config.init_from = f"{RUN_ROOT}/{target}/{r.init_from}" if r.init_from else ""
  config.run_dir = f"{RUN_ROOT}/{target}/{stage}"
  config.data = ml_collections.ConfigDict({
      "data_dir": "data/paper/tfds",   # where configs/paper/data.py wrote the datasets: fill in
      "sources": (r.source,),           # dataset names under data_dir, read back to back
      "shuffle": False,                 # the converter's fixed pre-shuffled order, as the reference
  })
  config.train.update({"steps": r.steps, "batch_size": r.batch_size, "lr": r.lr, "warmup_ratio": 0.03,
                       "weight_decay": 0.0, "clip_norm": 1.0, "max_len": 4096, "seed": 0,
                       "microbatches": 0})   # 0: batch_size / (per_device_batch x batch shards)
  config.train.per_device_batch = min(r.per_device_batch, TARGET_ROWS[target])
  config.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  config.checkpoint = ml_collections.ConfigDict({"save_every": 250, "keep_last": 2})
  config.log_every = 10
  config.recipe = f"{target},{stage}"
  config.dry_run = False          # True: shapes only; shardings, AOT compile, memory, FLOPs, time
  config.topology = ""            # dry runs: a TPU slice to compile for without one, e.g. "v5p:4x4x4"
                                  # (deviceless; needs libtpu installed); "": the devices jax sees
  config.width_divisor = 1        # dry runs only: every model width / this (tests, quick checks)
  config.hardware = ml_collections.ConfigDict({
      "device": "auto",           # a graft_jax/paper/hardware.py preset; auto: detect (CPU: h100-80gb)
      "memory_gib": 0.0,          # per-device memory limit; 0: the device's
      "peak_tflops": 0.0,         # peak bf16 TFLOP/s per device; 0: the device's
      "mfu": 0.4,                 # model FLOPs utilisation assumed for the step-time prediction
  })
  return config
