"""Short phrases that introduce the image in a user turn: `{phrase}{IMAGE}, {question}`.

Our own wording. Each phrase reads naturally when the image stands for a noun phrase right after
it ("Here is a picture of [image], what color is the circle?"), so none ends in whitespace: the
image embeddings follow the last word directly, as the question's ", " follows them.
The first phrase is the evaluation default; training draws one at random.
"""
from __future__ import annotations

import random

import numpy as np

IMAGE_PROMPTS: tuple[str, ...] = (
    "Here is a picture of",
    "Look at this image of",
    "This picture shows",
    "Take a look at this photo of",
    "Here is an image showing",
    "Consider this picture of",
    "The image here shows",
    "Have a look at this snapshot of",
    "In this picture we see",
    "This image captures",
    "Here we have a photo of",
    "Examine this image of",
    "This scene contains",
    "Study this picture of",
    "Here is a snapshot of",
    "Observe this image of",
    "Given this picture of",
    "The following image shows",
    "Glance at this photo of",
    "Here you can see",
    "This is an image of",
    "This is a picture of",
    "Check out this image of",
    "Inspect this picture of",
    "Based on this image of",
    "Looking at this picture of",
    "Focus on this image of",
    "Here is a view of",
    "Regarding this photo of",
    "Shown here is",
)


def pick_image_prompt(rng: np.random.Generator | random.Random | None = None) -> str:
  """The evaluation phrase (the first) when `rng` is None, else one drawn uniformly with `rng`."""
  if rng is None:
    return IMAGE_PROMPTS[0]
  if isinstance(rng, np.random.Generator):
    return IMAGE_PROMPTS[int(rng.integers(len(IMAGE_PROMPTS)))]
  return IMAGE_PROMPTS[rng.randrange(len(IMAGE_PROMPTS))]
