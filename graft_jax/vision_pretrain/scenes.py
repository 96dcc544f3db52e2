"""Labelled scenes for encoder pretraining, drawn like the synthetic shapes dataset's images.

Scene i depends only on (seed, SPLIT_INDEX, i); SPLIT_INDEX lies outside the indices the shapes
dataset gives its splits (0, 1, 2, ...), so no pretraining image is a train, val or test image.
Labels (P = patches per image, row-major like the ViT's patch tokens):
  patch_color int[N, P]: 0 = no object centred in the patch, 1 + index into COLORS otherwise
  patch_shape int[N, P]: 0 = none, 1 + index into SHAPES
  color_count int[N, len(COLORS)], shape_count int[N, len(SHAPES)]: objects of each colour / shape
"""
from __future__ import annotations

import numpy as np

from graft_jax.data import synthetic_shapes as shapes

SPLIT_INDEX = 1000
COLOR_NAMES = tuple(shapes.COLORS)


def labelled_scene(seed: int, index: int, image_size: int, patch_size: int,
                   max_objects: int = 4) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(uint8[H, W, 3] image, labels of one scene) for scene `index` (see the module docstring)."""
  rng = np.random.default_rng([seed, SPLIT_INDEX, index])
  objects = None
  while not objects:
    objects = shapes._scene(rng, image_size, max_objects)  # pylint: disable=protected-access
  background = "noisy" if rng.integers(2) else "plain"
  image = np.asarray(shapes.render(objects, background, image_size, rng), np.uint8)
  grid = image_size // patch_size
  patch_color = np.zeros(grid * grid, np.int32)
  patch_shape = np.zeros(grid * grid, np.int32)
  color_count = np.zeros(len(COLOR_NAMES), np.int32)
  shape_count = np.zeros(len(shapes.SHAPES), np.int32)
  for obj in objects:
    cell = min(int(obj.y // patch_size), grid - 1) * grid + min(int(obj.x // patch_size), grid - 1)
    patch_color[cell] = 1 + COLOR_NAMES.index(obj.color)
    patch_shape[cell] = 1 + shapes.SHAPES.index(obj.shape)
    color_count[COLOR_NAMES.index(obj.color)] += 1
    shape_count[shapes.SHAPES.index(obj.shape)] += 1
  return image, {"patch_color": patch_color, "patch_shape": patch_shape,
                 "color_count": color_count, "shape_count": shape_count}


def labelled_scenes(seed: int, start: int, count: int, image_size: int, patch_size: int,
                    max_objects: int = 4) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Scenes start .. start + count - 1 stacked: (uint8[N, H, W, 3], labels with a leading N axis)."""
  if image_size % patch_size:
    raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
  pairs = [labelled_scene(seed, i, image_size, patch_size, max_objects) for i in range(start, start + count)]
  images = np.stack([p[0] for p in pairs])
  labels = {k: np.stack([p[1][k] for p in pairs]) for k in pairs[0][1]}
  return images, labels
