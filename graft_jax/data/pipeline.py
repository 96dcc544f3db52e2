"""grain input pipeline over built splits (tfds_builders.load_source): deterministic, sharded per
host, bucket-padded batches, checkpointable iterator.

Order: record indices 0..N-1 of the source, sliced to this host's shard (shard_index::shard_count,
before shuffling, so hosts hold fixed disjoint subsets that cover the data), shuffled per epoch
from `seed` (grain's index shuffle: a pure function of (seed, epoch, position)), repeated. Each
record is then decoded, tokenised (encode_conversation) and its image preprocessed; the image
prompt is drawn with np.random.default_rng([seed, epoch, record_index]), so an element depends only
on (seed, epoch, record index) and a restored iterator recomputes exactly what it skipped. Samples
that cannot be used (too_long, a bad conversation, undecodable image) are counted in `Skips`, the
first few logged, and dropped; nothing is truncated. B consecutive kept samples form a batch,
padded to a length bucket (batching.collate).

Batch (B = batch_size, T = a bucket, S = image_size):
  tokens       int32[B, T]   token ids, pad_id after each sample's end
  loss_mask    bool[B, T]    templates.py's convention: loss_mask[b, t] means tokens[b, t] is a
                             target predicted from position t-1, so a loss over logits[:, :-1]
                             against tokens[:, 1:] is masked by loss_mask[:, 1:]
  valid        bool[B, T]    True on a sample's tokens, False on padding (and padding rows)
  image_pos    int32[B]      image embeddings go before tokens[b, image_pos]; -1 without an image
  images       float32[B, S, S, 3]  preprocessed (padded square, resized, normalised); zeros if none
  has_image    bool[B]
  record_index int32[B]      index into the source (-1 for a padding row)

Checkpointing: `it = iter(ds)`; `state = it.get_state()` (a small dict, JSON-able);
`it2 = iter(make_dataset(...same arguments...)[0]); it2.set_state(state)` continues with exactly
the batches `it` would have produced. For Orbax, save the iterator with
`grain.checkpoint.CheckpointSave(it)` / restore with `grain.checkpoint.CheckpointRestore(it)`.
Skip counts are diagnostics of this process (prefetching may count a little ahead of what was
consumed); they are not part of the iterator state.
"""
from __future__ import annotations

import bisect
import functools
import threading
from typing import Any, Sequence

import grain
import numpy as np

from graft_jax.data import batching
from graft_jax.data.errors import SampleError, Skips
from graft_jax.data.images import preprocess_image
from graft_jax.data.templates import ChatTemplate, encode_conversation
from graft_jax.data.tfds_builders import from_record


class ConcatSource:
  """Random access over several sources back to back (e.g. an image split and a text split)."""

  def __init__(self, sources: Sequence[Any]):
    self.sources = list(sources)
    self.offsets = np.cumsum([0] + [len(s) for s in self.sources]).tolist()

  def __len__(self) -> int:
    return self.offsets[-1]

  def __getitem__(self, index: int) -> Any:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    k = bisect.bisect_right(self.offsets, index) - 1
    return self.sources[k][index - self.offsets[k]]


class _SafeSkips:
  """Skips shared by grain's reader threads."""

  def __init__(self, skips: Skips):
    self.skips = skips
    self.lock = threading.Lock()

  def add(self, error: SampleError) -> None:
    with self.lock:
      self.skips.add(error)


class Prepare:
  """(position in the repeated order, record index) -> example dict for batching.collate, or None."""

  def __init__(self, source, tokenizer, template: ChatTemplate | str, mode: str, max_len: int,
               image_len: int, image_size: int, seed: int, epoch_len: int, random_prompts: bool,
               skips: _SafeSkips):
    self.source, self.tokenizer, self.template, self.mode = source, tokenizer, template, mode
    self.max_len, self.image_len, self.image_size = max_len, image_len, image_size
    self.seed, self.epoch_len, self.random_prompts, self.skips = seed, epoch_len, random_prompts, skips

  def __call__(self, position: int, record_index: int) -> dict[str, Any] | None:
    record_index = int(record_index)
    epoch = position // self.epoch_len
    rng = np.random.default_rng([self.seed, epoch, record_index]) if self.random_prompts else None
    try:
      record = from_record(self.source[record_index])
    except (KeyError, ValueError) as e:  # incl. json.JSONDecodeError, UnicodeDecodeError
      self.skips.add(SampleError("malformed_record", f"record {record_index}: {type(e).__name__}: {e}"))
      return None
    where = f"record {record_index} (id {record['id']})"
    try:
      encoded = encode_conversation(record["conversation"], self.tokenizer, self.template, self.mode,
                                    image_prompt_rng=rng, max_len=self.max_len, image_len=self.image_len)
      if encoded.has_image != bool(record["image"]):
        reason = "image_without_marker" if record["image"] else "marker_without_image"
        raise SampleError(reason, f"image bytes: {len(record['image'])}, image slot: {encoded.image_pos}")
      image = preprocess_image(record["image"], self.image_size) if encoded.has_image else None
    except SampleError as e:
      self.skips.add(SampleError(e.reason, f"{where}: {e}"))
      return None
    return {"tokens": encoded.ids, "loss_mask": encoded.loss_mask, "image_pos": encoded.image_pos,
            "image": image, "record_index": record_index}


def make_dataset(
    source,
    tokenizer,
    *,
    template: ChatTemplate | str,
    mode: str,
    max_len: int,
    batch_size: int,
    image_size: int,
    image_len: int,
    seed: int = 0,
    shuffle: bool = True,
    random_prompts: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    buckets: Sequence[int] | None = None,
    pad_id: int = 0,
    drop_remainder: bool = True,
    num_threads: int = 4,
    prefetch: int | None = None,
) -> tuple[grain.IterDataset, Skips]:
  """The batched dataset (see the module docstring) and the Skips it fills while iterating.

  source: a random-access source of records (load_source, or a sequence of them, concatenated).
  max_len: limit on text tokens + `image_len` embeddings (start/end included, e.g. 579) per image
  sample (longer: skipped and counted, never truncated); image_size: the encoder's input side.
  buckets: token lengths T a batch may have (default batching.default_buckets(max_len)); the
  largest must be >= max_len. shuffle=False and random_prompts=False give evaluation order and
  the first image prompt. num_epochs None repeats forever. shard_index/shard_count default to
  jax.process_index()/process_count(). drop_remainder=False pads the last batch with padding rows.
  num_threads / prefetch: grain reader threads and element read-ahead (default 2 * batch_size).
  """
  if isinstance(source, (list, tuple)):
    source = ConcatSource(source)
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  buckets = tuple(sorted(buckets or batching.default_buckets(max_len)))
  if buckets[-1] < max_len:
    raise ValueError(f"the largest bucket {buckets[-1]} is below max_len={max_len}")

  ds = grain.MapDataset.range(len(source))[shard_index::shard_count]
  epoch_len = len(ds)
  if epoch_len == 0:
    raise ValueError(f"shard {shard_index}/{shard_count} of a {len(source)}-record source is empty")
  if shuffle:
    ds = ds.shuffle(seed)
  ds = ds.repeat(num_epochs)
  skips = Skips("pipeline")
  ds = ds.map_with_index(Prepare(source, tokenizer, template, mode, max_len, image_len, image_size,
                                 seed, epoch_len, random_prompts, _SafeSkips(skips)))
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch or 2 * batch_size)
  ds = ds.to_iter_dataset(read)  # drops the None of skipped samples
  collate = functools.partial(batching.collate, batch_size=batch_size, buckets=buckets,
                              image_size=image_size, pad_id=pad_id)
  return ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=collate), skips
