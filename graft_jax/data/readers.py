"""Readers for LLaVA JSON and chat JSONL, and even interleaving of several sources.

LLaVA JSON: a list of {"id", "image" (optional; relative to `image_root`, or absolute),
"conversations": [{"from": "human"|"gpt", "value": str}, ...]}.
Chat JSONL: one {"messages": [{"role": "user"|"assistant", "content": str}, ...]} per line, with
optional "id" and "image" (as above).

Errors (see errors.py): a missing file, a LLaVA file that is not one valid JSON list, or an
unknown option raises. Every per-sample problem is a SampleError with a reason; with
on_error="skip" (default) it is counted in the returned `Skips` and the first few are logged with
their file and line (JSONL) or entry index and id (JSON); with on_error="raise" it is raised.
Reasons: malformed_json (JSONL line), malformed_entry, the conversation reasons of
templates.check_conversation, marker_without_image, image_without_marker, multiple_images,
missing_image, corrupt_image.
Unknown keys in a record are kept in `Sample.extra` (e.g. the synthetic set's "answer").
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from graft_jax.data.errors import DataFormatError, SampleError, Skips
from graft_jax.data.images import load_image
from graft_jax.data.templates import IMAGE_MARKER, check_conversation

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
IMAGE_CHECKS = ("exists", "decode")
ON_ERROR = ("skip", "raise")


@dataclasses.dataclass(frozen=True)
class Sample:
  """One conversation: [{"role", "content"}], with the absolute path of its image or None."""
  id: str
  conversation: list[dict[str, str]]
  image: str | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_llava_json(path: str, image_root: str | None = None, *, image_check: str = "decode",
                    on_error: str = "skip") -> tuple[list[Sample], Skips]:
  """Reads a LLaVA JSON file. image_root defaults to the file's directory.

  image_check: "decode" decodes every image once (catches corrupt bytes; slow for huge sets),
  "exists" only checks that the file is there.
  """
  _check_options(image_check, on_error)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No LLaVA JSON file at {path!r}")
  with open(path, encoding="utf-8") as f:
    try:
      records = json.load(f)
    except json.JSONDecodeError as e:
      raise DataFormatError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from e
  if not isinstance(records, list):
    raise DataFormatError(f"{path}: expected a JSON list of samples, got {type(records).__name__}")
  image_root = os.path.dirname(os.path.abspath(path)) if image_root is None else image_root

  def parse(index: int, record: Any) -> Sample:
    where = f"{path} entry {index}"
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
      raise SampleError("malformed_entry", f"{where}: expected an object with a 'conversations' list")
    conversation = []
    for turn in record["conversations"]:
      if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or not isinstance(turn.get("from"), str):
        raise SampleError("malformed_entry", f"{where}: a turn is not {{'from': str, 'value': str}}: {turn!r:.200}")
      role = LLAVA_ROLES.get(turn["from"], turn["from"])
      conversation.append({"role": role, "content": turn["value"]})
    sample_id = str(record.get("id", index))
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
    return _finish(sample_id, conversation, record.get("image"), image_root, image_check, extra, f"{where} (id {sample_id})")

  return _collect(path, enumerate(records), parse, on_error)


def read_chat_jsonl(path: str, image_root: str | None = None, *, image_check: str = "decode",
                    on_error: str = "skip") -> tuple[list[Sample], Skips]:
  """Reads a chat JSONL file (blank lines are ignored). image_root defaults to the file's directory."""
  _check_options(image_check, on_error)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No chat JSONL file at {path!r}")
  image_root = os.path.dirname(os.path.abspath(path)) if image_root is None else image_root

  def lines() -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if line.strip():
          yield lineno, line

  def parse(lineno: int, line: str) -> Sample:
    where = f"{path}:{lineno}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise SampleError("malformed_json", f"{where}: malformed JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
      raise SampleError("malformed_entry", f"{where}: expected an object with a 'messages' list")
    conversation = []
    for message in record["messages"]:
      if not (isinstance(message, dict) and isinstance(message.get("content"), str)
              and isinstance(message.get("role"), str)):
        raise SampleError("malformed_entry", f"{where}: a message is not {{'role': str, 'content': str}}: {message!r:.200}")
      conversation.append({"role": message["role"], "content": message["content"]})
    sample_id = str(record.get("id", f"{os.path.basename(path)}:{lineno}"))
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "messages")}
    return _finish(sample_id, conversation, record.get("image"), image_root, image_check, extra, where)

  return _collect(path, lines(), parse, on_error)


def _check_options(image_check: str, on_error: str) -> None:
  if image_check not in IMAGE_CHECKS:
    raise ValueError(f"image_check must be one of {IMAGE_CHECKS}, got {image_check!r}")
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _collect(path: str, items: Iterator[tuple[Any, Any]], parse: Callable[[Any, Any], Sample],
             on_error: str) -> tuple[list[Sample], Skips]:
  samples, skips = [], Skips(path)
  for key, item in items:
    try:
      samples.append(parse(key, item))
    except SampleError as e:
      if on_error == "raise":
        raise
      skips.add(e)
  skips.log_summary()
  return samples, skips


def _finish(sample_id: str, conversation: list[dict[str, str]], image: Any, image_root: str,
            image_check: str, extra: dict[str, Any], where: str) -> Sample:
  """Checks the conversation and its image, and resolves the image path."""
  if image is not None and not isinstance(image, str):
    reason = "multiple_images" if isinstance(image, list) else "malformed_entry"
    raise SampleError(reason, f"{where}: 'image' must be one path (one image per sample), got {image!r:.200}")
  markers = sum(turn["content"].count(IMAGE_MARKER) for turn in conversation)
  if markers == 0 and image is not None:
    raise SampleError("image_without_marker", f"{where}: has an image but no {IMAGE_MARKER} marker")
  if markers and image is None:
    raise SampleError("marker_without_image", f"{where}: has an {IMAGE_MARKER} marker but no image")
  try:
    check_conversation(conversation)
  except SampleError as e:
    raise SampleError(e.reason, f"{where}: {e}") from e
  if image is None:
    return Sample(sample_id, conversation, None, extra)
  image_path = os.path.join(image_root, image)  # an absolute `image` wins
  if not os.path.isfile(image_path):
    raise SampleError("missing_image", f"{where}: no image file at {image_path!r}")
  if image_check == "decode":
    try:
      load_image(image_path)
    except SampleError as e:
      raise SampleError(e.reason, f"{where}: {e}") from e
  return Sample(sample_id, conversation, image_path, extra)


def interleave_evenly(sources: Sequence[Sequence[Any]]) -> list[Any]:
  """Merges sources so that each is spread evenly over the result, keeping each source's order.

  Item i of a source of n items sits at fraction (i + 1/2) / n of the way through; items are
  merged by that fraction, ties going to the earlier source. Deterministic: no randomness.
  E.g. [[a0..a5], [b0, b1]] -> a0 a1 b0 a2 a3 a4 b1 a5.
  """
  keys, owners, positions = [], [], []
  for k, source in enumerate(sources):
    n = len(source)
    keys.append((2 * np.arange(n, dtype=np.float64) + 1) / (2 * n))
    owners.append(np.full(n, k))
    positions.append(np.arange(n))
  if not keys:
    return []
  keys, owners, positions = np.concatenate(keys), np.concatenate(owners), np.concatenate(positions)
  # Equal fractions are equal floats (each key is one correctly rounded division), and distinct ones
  # differ by at least 1 / (2 n m), far above float64 resolution for any realistic n, m.
  order = np.lexsort((owners, keys))
  return [sources[owners[j]][positions[j]] for j in order]
