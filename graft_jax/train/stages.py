"""The method's training stages (method.md section 4): data, masking, and what trains by default.

Every stage's `trainable` rules can be overridden in its config; these are the defaults.
"""
from __future__ import annotations

import dataclasses

TRANSLATORS = r"llm/segments/translator_\d+/.*"


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  on_surrogate: bool          # False: the full target (stage 3, or the stage-2 control)
  sources: tuple[str, ...]    # "image" (shapes / LLaVA) and/or "text" (chat)
  mask_mode: str              # "markers" (stages 1-2) or "standard"
  decoder_only: bool          # text-only: no vision tower at all
  trainable: tuple[str, ...]


STAGES = {
    "translator": Stage("translator", True, ("text",), "standard", True, (TRANSLATORS,)),
    "pretrain": Stage("pretrain", True, ("image", "text"), "markers", False,
                      ("proj/.*", "img/post_ln/.*", TRANSLATORS)),
    "finetune_encoder": Stage("finetune_encoder", True, ("image",), "markers", False,
                              ("proj/.*", "img/blocks/.*[-8:]", "img/post_ln/.*")),
    "finetune_decoder": Stage("finetune_decoder", False, ("image",), "standard", False,
                              ("llm/.*", "proj/.*", "img/blocks/.*[-8:]", "img/post_ln/.*")),
}


def get_stage(name: str) -> Stage:
  if name not in STAGES:
    raise ValueError(f"Unknown stage {name!r}; choose from {sorted(STAGES)}")
  return STAGES[name]
