"""Statistics of an encoded dataset: sizes, lengths with and without image embeddings, supervision."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from graft_jax.data.templates import EncodedSample


@dataclasses.dataclass(frozen=True)
class DatasetStats:
  samples: int
  image_samples: int
  text_tokens_mean: float      # token ids per sample, image embeddings excluded
  text_tokens_max: int
  tokens_mean: float           # full length per sample, image embeddings included
  tokens_max: int
  image_tokens: int            # image embeddings in the whole set
  supervised_tokens: int       # loss-mask positions in the whole set
  supervised_mean: float

  @property
  def text_samples(self) -> int:
    return self.samples - self.image_samples

  def summary(self) -> str:
    return (f"{self.samples} samples ({self.image_samples} with an image, {self.text_samples} text-only); "
            f"tokens/sample mean {self.tokens_mean:.1f} max {self.tokens_max} "
            f"(text only: mean {self.text_tokens_mean:.1f} max {self.text_tokens_max}); "
            f"image tokens {self.image_tokens}; supervised tokens {self.supervised_tokens} "
            f"(mean {self.supervised_mean:.1f}/sample)")


def dataset_stats(encoded: Sequence[EncodedSample], image_len: int) -> DatasetStats:
  """Statistics of `encoded`, where each image adds `image_len` embeddings (e.g. 577 + 2 = 579)."""
  if not encoded:
    raise ValueError("dataset_stats needs at least one sample")
  text = np.array([len(s.ids) for s in encoded])
  full = np.array([s.total_len(image_len) for s in encoded])
  supervised = np.array([s.num_supervised for s in encoded])
  image_samples = sum(s.has_image for s in encoded)
  return DatasetStats(
      samples=len(encoded), image_samples=image_samples,
      text_tokens_mean=float(text.mean()), text_tokens_max=int(text.max()),
      tokens_mean=float(full.mean()), tokens_max=int(full.max()),
      image_tokens=image_samples * image_len,
      supervised_tokens=int(supervised.sum()), supervised_mean=float(supervised.mean()))
