"""Held-out batches for the fidelity measures: text chats and image-conditioned LLaVA samples."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from graft_jax.data.images import preprocess_image
from graft_jax.data.padding import right_pad
from graft_jax.data.readers import Sample
from graft_jax.data.synthetic_text import make_chat
from graft_jax.data.templates import encode_conversation, expand_image_slot

HELD_OUT_CHATS = 1  # the synthetic chat split held out for fidelity ("val"), as in tasks/surrogate.py


def chat_token_ids(tokenizer, template: str, data_seed: int, split_index: int, count: int) -> list[np.ndarray]:
  """Token ids int32[T_i] of the first `count` synthetic chats of split `split_index` (0 train, 1 val)."""
  chats = [make_chat(data_seed, split_index, i)["messages"] for i in range(count)]
  return [encode_conversation(c, tokenizer, template, "standard").ids for c in chats]


def held_out_chats(tokenizer, template: str, data_seed: int, count: int) -> list[np.ndarray]:
  """The first `count` held-out synthetic chats (the main job's text-KL set)."""
  return chat_token_ids(tokenizer, template, data_seed, HELD_OUT_CHATS, count)


def text_batches(samples: Sequence[np.ndarray], batch_size: int, pad_id: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(tokens int32[B, T] right-padded, mask bool[B, T]) batches, T a multiple of 64."""
  for i in range(0, len(samples), batch_size):
    yield right_pad(list(samples[i:i + batch_size]), pad_id)


def image_batches(samples: Sequence[Sample], tokenizer, template: str, image_size: int, image_len: int,
                  batch_size: int, pad_id: int) -> Iterator[dict]:
  """Whole conversations of image samples in the "standard" mask mode (the answer supervised),
  the image prompt the first phrase, the image slot expanded. Yields dicts: tokens int32[B, T],
  loss_mask, valid, image_mask bool[B, T] (T a multiple of 16), images float32[B, H, W, 3],
  image_pos int32[B]."""
  missing = [s.id for s in samples if s.image is None]
  if missing:
    raise ValueError(f"image_batches needs image samples; {len(missing)} have none (e.g. {missing[:3]})")
  for i in range(0, len(samples), batch_size):
    chunk = samples[i:i + batch_size]
    encoded = [encode_conversation(s.conversation, tokenizer, template, "standard") for s in chunk]
    expanded = [expand_image_slot(e, image_len, pad_id) for e in encoded]
    tokens, valid = right_pad([ids for ids, _, _ in expanded], pad_id, multiple=16)
    width = tokens.shape[1]
    pad = lambda a: np.pad(a, (0, width - len(a)))
    yield {"tokens": tokens, "valid": valid,
           "loss_mask": np.stack([pad(m) for _, m, _ in expanded]),
           "image_mask": np.stack([pad(m) for _, _, m in expanded]),
           "images": np.stack([preprocess_image(s.image, image_size) for s in chunk]).astype(np.float32),
           "image_pos": np.asarray([e.image_pos for e in encoded], np.int32)}
