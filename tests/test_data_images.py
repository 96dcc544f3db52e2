"""Image loading and preprocessing."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from graft_jax.data.errors import SampleError
from graft_jax.data.images import CLIP_MEAN, CLIP_STD, CorruptImageError, load_image, pad_to_square, preprocess_image


def png_bytes(img):
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


def normalised(rgb, mean=CLIP_MEAN, std=CLIP_STD):
  return (np.asarray(rgb, np.float32) / 255 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def test_clip_constants():
  assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
  assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_pad_to_square_uses_rounded_mean_and_centres():
  img = Image.new("RGB", (4, 2), (255, 0, 0))
  sq = np.asarray(pad_to_square(img, mean=(0.5, 0.25, 0.999)))
  assert sq.shape == (4, 4, 3)
  pad = [128, 64, 255]  # round(0.5 * 255) = 128 (int() would give 127), round(63.75) = 64, round(254.7) = 255
  assert (sq[0] == pad).all() and (sq[3] == pad).all()
  assert (sq[1:3] == [255, 0, 0]).all()
  tall = np.asarray(pad_to_square(Image.new("RGB", (1, 3), (0, 0, 255)), mean=(0, 0, 0)))
  assert tall.shape == (3, 3, 3) and (tall[:, 1] == [0, 0, 255]).all() and (tall[:, [0, 2]] == 0).all()
  same = Image.new("RGB", (3, 3))
  assert pad_to_square(same) is same


def test_preprocess_values_and_layout():
  x = preprocess_image(Image.new("RGB", (6, 3), (255, 0, 128)), image_size=6)
  assert x.shape == (6, 6, 3) and x.dtype == np.float32
  pad = [round(m * 255) for m in CLIP_MEAN]
  np.testing.assert_allclose(x[0, 0], normalised(pad), atol=1e-6)
  np.testing.assert_allclose(x[3, 3], normalised([255, 0, 128]), atol=1e-6)
  custom = preprocess_image(Image.new("RGB", (2, 2), (51, 102, 153)), 2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  np.testing.assert_allclose(custom[0, 0], [0.2 * 2 - 1, 0.4 * 2 - 1, 0.6 * 2 - 1], atol=1e-6)


def test_preprocess_resizes_bicubic():
  rng = np.random.default_rng(0)
  img = Image.fromarray(rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8))
  expected = np.asarray(img.resize((4, 4), Image.Resampling.BICUBIC), np.float32)
  np.testing.assert_allclose(preprocess_image(img, 4), normalised(expected), atol=1e-5)
  assert not np.allclose(expected, np.asarray(img.resize((4, 4), Image.Resampling.NEAREST), np.float32))


def test_load_from_path_and_bytes_converts_to_rgb(tmp_path):
  gray = Image.new("L", (3, 2), 77)
  path = tmp_path / "g.png"
  gray.save(path)
  for source in (str(path), path, png_bytes(gray)):
    img = load_image(source)
    assert img.mode == "RGB" and img.size == (3, 2) and img.getpixel((0, 0)) == (77, 77, 77)
  rgba = load_image(png_bytes(Image.new("RGBA", (2, 2), (10, 20, 30, 0))))
  assert rgba.mode == "RGB" and rgba.getpixel((1, 1)) == (10, 20, 30)
  assert preprocess_image(str(path), 3).shape == (3, 3, 3)


def test_bad_images(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.png"):
    load_image(str(tmp_path / "nothing.png"))
  with pytest.raises(CorruptImageError, match="cannot decode image") as e:
    load_image(b"definitely not an image")
  assert e.value.reason == "corrupt_image" and isinstance(e.value, SampleError)
  noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
  good = png_bytes(Image.fromarray(noise))  # incompressible, so the cut lands inside the pixel data
  truncated = tmp_path / "t.png"
  truncated.write_bytes(good[:len(good) // 2])
  with pytest.raises(CorruptImageError, match="t.png"):
    load_image(str(truncated))
  with pytest.raises(CorruptImageError):
    preprocess_image(str(truncated), 8)
