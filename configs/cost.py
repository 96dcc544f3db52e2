"""Cost planner: python -m graft_jax.main --config=configs/cost.py:llama-3.1-70b

Hours of the surrogate route (stage 1 + stage 2 on the surrogate + decoder fine-tuning of the graft
on `decoder_finetune_fraction` of the data) against adapter pretraining + full-decoder training,
from FLOPs and an MFU (given, or measured: --config.hardware.mfu_json=<gpu_check JSON>), in the form
of the paper's Figure 2. The arg is a preset (llama-3.2-3b, llama-3.1-8b, llama-3.1-70b,
smollm2-135m); the surrogate plan defaults to the released range. Token counts per sample are
assumptions (printed); override them, e.g. --config.data.image_text_tokens=250.
"""
import ml_collections

from graft_jax.cost_planner import RELEASED_RANGES


def get_config(arg=None):
  name = arg or "llama-3.1-70b"
  if name not in RELEASED_RANGES:
    raise ValueError(f"configs/cost.py: unknown preset {name!r}; choose from {sorted(RELEASED_RANGES)}")
  return ml_collections.ConfigDict({
      "task": "cost",
      "model": name,
      "ranges": RELEASED_RANGES[name],
      # CLIP ViT-L/14-336 (the paper's encoder): 577 tokens, 579 image embeddings.
      "encoder": {"image_size": 336, "patch_size": 14, "width": 1024, "depth": 24, "heads": 16, "mlp_dim": 4096},
      "hardware": {"devices": 8, "peak_tflops": 989.0, "mfu": 0.4, "mfu_json": ""},
      "data": {
          "pretrain_samples": 558_000,     # LCS-558K captions (adapter pretraining)
          "image_samples": 665_000,        # LLaVA-665K (stages 1-3, full-decoder training)
          "text_samples": 500_000,         # GenQA text-only samples interleaved in stage 1
          "caption_text_tokens": 70,       # text tokens of a caption sample (assumption)
          "image_text_tokens": 300,        # text tokens of a LLaVA-665K sample (assumption)
          "text_only_tokens": 400,         # tokens of a GenQA sample (assumption)
          "supervised_fraction": 0.5,      # share of text tokens that are supervised (LM head)
      },
      "decoder_finetune_fraction": 0.2,
      "out": "",
  })
