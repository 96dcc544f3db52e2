"""Shared pieces of the ml_collections configs in configs/."""
from __future__ import annotations

import ml_collections

from graft_jax.models.presets import preset


def model_config(name: str = "smollm2-135m", source: str = "", remat_policy: str = "none") -> ml_collections.ConfigDict:
  """The `model` block: a preset, where its weights are, and numerics.

  `source` is a .gguf file, an HF safetensors directory or a converted graft_jax directory;
  empty means the embedded default, which only the smollm2-135m preset has. remat_policy: the
  decoder blocks' ("none", "dots", "dots_no_batch" or "full"; models/llama.py).
  """
  preset(name)  # validates the name early
  return ml_collections.ConfigDict({
      "preset": name, "source": source, "param_dtype": "float32", "dtype": "float32",
      "remat_policy": remat_policy})


def default_template(preset_name: str) -> str:
  """The chat markup of a preset's family: ChatML for SmolLM2, Llama-3's otherwise."""
  return "chatml" if preset_name.startswith("smollm2") else "llama3"


def data_config() -> ml_collections.ConfigDict:
  """The default synthetic datasets (configs/data.py) and where they live."""
  return ml_collections.ConfigDict({
      "out_dir": "data_cache/default",
      "data_dir": "data_cache/tfds",
      "seed": 0,
      # (split, samples) pairs in order: a split's index seeds its samples, so keep the order.
      "shapes_splits": (("train", 2000), ("val", 200), ("test", 300)),
      "text_splits": (("train", 4000), ("val", 200)),
      "image_size": 64,
      # Taken in turn; a subset of caption, color, shape, count, position, exists.
      "question_types": ("caption", "color", "shape", "count", "position", "exists"),
      # question-answer turns per training sample (one image, several questions, as in LLaVA's
      # instruction data); the val and test splits keep one question each
      "train_turns": 1,
  })


def vit_config() -> ml_collections.ConfigDict:
  """The offline default encoder: a small CLIP-style ViT trained from scratch (64 px, patch 8:
  64 patches + CLS = 65 tokens, 67 image embeddings with start/end of image).

  `source`: a transformers CLIP vision directory to start from (empty: random init), e.g. the
  encoder graft_jax/vision_pretrain writes.
  `output_norm`: the adapter's output normalisation, "none" (default) or "rms_token_scale"
  (every image embedding RMS-normalised to the mean RMS norm of the LLM's token embeddings;
  graft_jax/models/projector.py)."""
  return ml_collections.ConfigDict({
      "image_size": 64, "patch_size": 8, "width": 192, "depth": 4, "heads": 3, "mlp_dim": 768,
      "variant": "clip", "projector_depth": 2, "output_norm": "none", "seed": 0, "source": ""})


def train_config(stage: str, model: str = "smollm2-135m") -> ml_collections.ConfigDict:
  """A training stage on the embedded default (see graft_jax/train/stages.py for the stages).

  `lora` (graft_jax/train/lora.py; off at rank 0): LoRA adapters instead of the whole decoder, the
  paper's cheaper stage-3 baseline, only for `finetune_decoder`. `--config.lora.rank=8` adds
  adapters of rank 8, scaled by alpha / rank, on the `targets` projections of every layer
  (names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj, or regexes over kernel paths),
  and the rule "llm/.*" of `trainable` is then read as "lora/.*": the LoRA factors, `proj`, the
  encoder's last 8 layers and its post-LN train, the decoder stays frozen. With custom `trainable`
  rules, list "lora/.*" yourself; rules that train no LoRA factor or an adapted kernel are refused.
  """
  from graft_jax.train.stages import get_stage  # pylint: disable=g-import-not-at-top
  s = get_stage(stage)
  defaults = {  # offline-scale choices; the paper's are in method.md section 4
      "translator": dict(steps=200, batch_size=16, lr=3e-4),
      "pretrain": dict(steps=200, batch_size=16, lr=1e-3),
      "finetune_encoder": dict(steps=300, batch_size=16, lr=1e-3),
      "finetune_decoder": dict(steps=200, batch_size=16, lr=5e-5),
  }[stage]
  return ml_collections.ConfigDict({
      "task": "train",
      "stage": stage,
      "model": model_config(model),
      "template": default_template(model),
      "vit": vit_config(),
      # Translator ranges of the surrogate; () trains against the full target.
      "ranges": ((19, 28),) if s.on_surrogate else (),
      # More surrogates to train the encoder side against at once (issue 9's lever): a tuple of
      # (ranges, run dir of that surrogate's trained translator); step s trains against surrogate
      # s mod (1 + len(mix)), the one of `ranges` being number 0 (train/mix.py).
      "mix": (),
      "trainable": s.trainable,
      "lora": {"rank": 0, "alpha": 16.0, "targets": ("q_proj", "v_proj")},  # rank 0: off
      "init_from": "",            # run dir of the previous stage, e.g. runs/translator
      "run_dir": f"runs/{stage}",
      "data": data_config(),
      "train": {
          "steps": defaults["steps"], "batch_size": defaults["batch_size"], "microbatches": 1,
          "lr": defaults["lr"], "warmup_ratio": 0.03, "weight_decay": 0.0, "clip_norm": 1.0,
          "encoder_lr_mult": 1.0, "max_len": 512, "seed": 0,
          "kl_weight": 0.0,            # > 0: distil toward the full target's logits
          "kl_rows": "all",            # "text": the KL in text-only samples alone (a stage-1 anchor)
          "image_noise": 0.0,          # > 0: relative Gaussian noise on the image embeddings (train/step.py)
          "embed_penalty": 0.0,        # > 0: penalty on the image embeddings' statistics (train/embedding_penalty.py)
          "dynamic_loss_weights": False,
      },
      "mesh": (("data", -1), ("fsdp", 1), ("tensor", 1)),
      "distributed": False,       # True on multi-host slices: jax.distributed.initialize() first
      "checkpoint": {"save_every": 50, "keep_last": 2},
      "log_every": 1,
  })
