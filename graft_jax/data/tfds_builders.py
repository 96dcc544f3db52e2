"""tensorflow-datasets builders: LLaVA JSON / chat JSONL files -> ArrayRecord splits, read back
through `as_data_source()` (random access, for grain).

One record per sample that the readers accept (bad samples are skipped and counted there, never
a crash mid-build):
  id            str
  conversation  JSON text of [{"role": "user"|"assistant", "content": str}, ...]
  extra         JSON text of the record's other keys (e.g. the synthetic set's "answer")
  image         the image file's bytes as stored (PNG/JPEG/...), b"" for a text-only sample

Images are kept as opaque bytes (`Tensor(shape=(), dtype=object)`) rather than `features.Image`:
that writes without TensorFlow (features.Image needs it to encode) and we decode with Pillow,
whatever the format. Records keep the input files' order (`disable_shuffling`): record i of a
split is the i-th accepted sample; the training pipeline shuffles.

Layout: {data_dir}/{name}/{VERSION}/{name}-{split}.array_record-*, plus dataset_info.json and
metadata.json holding the per-split skip counts (`builder.info.metadata["skips"]`).
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from graft_jax.data.errors import Skips
from graft_jax.data.readers import Sample, read_chat_jsonl, read_llava_json

VERSION = "1.0.0"
READERS = {".json": read_llava_json, ".jsonl": read_chat_jsonl}


def features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "conversation": tfds.features.Text(),
      "extra": tfds.features.Text(),
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),
  })


def read_samples(path: str, image_root: str | None = None, image_check: str = "decode") -> tuple[list[Sample], Skips]:
  """Samples of a LLaVA `.json` or chat `.jsonl` file (chosen by extension), and its skips."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in READERS:
    raise ValueError(f"{path!r}: expected a LLaVA .json or a chat .jsonl file")
  return READERS[ext](path, image_root, image_check=image_check)


def to_record(sample: Sample) -> dict[str, Any]:
  """The stored form of a reader Sample (reads its image's bytes)."""
  image = b""
  if sample.image is not None:
    with open(sample.image, "rb") as f:
      image = f.read()
  return {"id": sample.id, "conversation": json.dumps(sample.conversation, ensure_ascii=False),
          "extra": json.dumps(sample.extra, ensure_ascii=False), "image": image}


def from_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """A record as read back -> {"id": str, "conversation": list, "extra": dict, "image": bytes}."""
  text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
  image = record["image"]
  return {"id": text(record["id"]), "conversation": json.loads(text(record["conversation"])),
          "extra": json.loads(text(record["extra"])), "image": bytes(image)}


class ConversationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One split per input file. `name` is set per instance (like tfds' AdhocBuilder), so one class
  serves every dataset; unregistered, so build and load go through this module."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "Conversations with optional encoded image bytes."}

  def __init__(self, *, name: str, split_files: Mapping[str, str] | None = None,
               image_root: str | None = None, image_check: str = "decode", **kwargs: Any):
    self.name = name
    self._split_files = dict(split_files or {})
    self._image_root = image_root
    self._image_check = image_check
    self.skips: dict[str, Skips] = {}
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=features(), disable_shuffling=True,
                                 metadata=tfds.core.MetadataDict(),
                                 description="Conversations (LLaVA JSON / chat JSONL) for graft_jax.")

  def _split_generators(self, dl_manager) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager
    generators = {}
    for split, path in self._split_files.items():
      samples, self.skips[split] = read_samples(path, self._image_root, self._image_check)
      generators[split] = self._generate_examples(samples)
    self.info.metadata["skips"] = {s: {"source": k.source, "counts": dict(k.counts)} for s, k in self.skips.items()}
    return generators

  def _generate_examples(self, samples: list[Sample]) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, sample in enumerate(samples):
      yield i, to_record(sample)


def dataset_dir(name: str, data_dir: str) -> str:
  return os.path.join(data_dir, name, VERSION)


def build_dataset(name: str, split_files: Mapping[str, str], image_root: str | None, data_dir: str, *,
                  image_check: str = "decode", overwrite: bool = False) -> ConversationBuilder:
  """Writes {split: file} (LLaVA .json / chat .jsonl) as ArrayRecord splits of dataset `name`.

  image_root: where relative image paths resolve (None: each file's directory). An existing build
  is reused as is unless `overwrite`. `builder.skips[split]` holds the skips of this build.
  """
  if overwrite and os.path.isdir(dataset_dir(name, data_dir)):
    shutil.rmtree(dataset_dir(name, data_dir))
  builder = ConversationBuilder(name=name, split_files=split_files, image_root=image_root,
                                image_check=image_check, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder


def load_source(name: str, split: str, data_dir: str):
  """Random-access source of a built split: len(src), src[i] -> record dict (see from_record)."""
  builder = tfds.builder_from_directory(dataset_dir(name, data_dir))
  return builder.as_data_source(split)
