"""Encode reader samples in bulk, counting (not crashing on) the ones that cannot be encoded."""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from graft_jax.data.errors import SampleError, Skips
from graft_jax.data.readers import Sample
from graft_jax.data.templates import ChatTemplate, EncodedSample, encode_conversation


def encode_samples(
    samples: Sequence[Sample],
    tokenizer,
    template: ChatTemplate | str,
    mode: str,
    *,
    max_len: int | None = None,
    image_len: int = 0,
    image_prompt_rng: np.random.Generator | random.Random | None = None,
    source: str = "encode",
) -> tuple[list[tuple[Sample, EncodedSample]], Skips]:
  """(sample, encoding) pairs for the samples that fit; the others (too_long, or a conversation
  reason) are counted in Skips. A text-only sample gets no image embeddings, whatever image_len."""
  kept, skips = [], Skips(source)
  for sample in samples:
    try:
      encoded = encode_conversation(sample.conversation, tokenizer, template, mode, image_prompt_rng=image_prompt_rng,
                                    max_len=max_len, image_len=image_len)
    except SampleError as e:
      skips.add(SampleError(e.reason, f"sample {sample.id}: {e}"))
      continue
    if encoded.has_image != (sample.image is not None):
      skips.add(SampleError("image_without_marker" if sample.image else "marker_without_image",
                            f"sample {sample.id}: image {sample.image!r} does not match its {encoded.has_image=}"))
      continue
    kept.append((sample, encoded))
  skips.log_summary()
  return kept, skips
