"""Image loading and preprocessing: RGB, pad to square with the mean colour, resize, normalise."""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image

from graft_jax.data.errors import SampleError

# OpenAI CLIP's normalisation constants (also LLaVA's), in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CorruptImageError(SampleError):
  """Image bytes that Pillow cannot decode."""

  def __init__(self, where: str, cause: Exception):
    super().__init__("corrupt_image", f"cannot decode image {where}: {type(cause).__name__}: {cause}")


def load_image(source: str | os.PathLike | bytes) -> Image.Image:
  """Decodes a file path or encoded bytes fully into an RGB image.

  Raises FileNotFoundError for a missing path and CorruptImageError for undecodable bytes.
  """
  where = f"({len(source)} bytes)" if isinstance(source, bytes) else repr(os.fspath(source))
  if not isinstance(source, bytes) and not os.path.isfile(source):
    raise FileNotFoundError(f"No image file at {where}")
  try:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
      img.load()  # decode now, so truncated or garbled data fails here and not mid-batch
      return img.convert("RGB")
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise CorruptImageError(where, e) from e


def pad_to_square(img: Image.Image, mean: Sequence[float] = CLIP_MEAN) -> Image.Image:
  """Centres `img` on a square canvas filled with round(mean * 255)."""
  w, h = img.size
  if w == h:
    return img
  side = max(w, h)
  fill = tuple(int(round(m * 255)) for m in mean)
  canvas = Image.new("RGB", (side, side), fill)
  canvas.paste(img, ((side - w) // 2, (side - h) // 2))
  return canvas


def preprocess_image(
    image: Image.Image | str | os.PathLike | bytes,
    image_size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> np.ndarray:
  """Image (or its path / bytes) -> float32[image_size, image_size, 3], (x / 255 - mean) / std."""
  img = image if isinstance(image, Image.Image) else load_image(image)
  img = pad_to_square(img.convert("RGB"), mean)
  if img.size != (image_size, image_size):
    img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
  x = np.asarray(img, np.float32) / 255.0
  return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)
