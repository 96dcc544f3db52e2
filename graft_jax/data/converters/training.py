"""LLaVA instruction data and GenQA-style chats -> the recipe's training files, in a fixed order.

Inputs:
  LLaVA JSON (llava_v1_5_mix665k.json, blip_laion_cc_sbu_558k.json): a list of {"id", "image"
    (relative to the image folder: "coco/train2017/...", "gqa/images/...", "00453/..."),
    "conversations": [{"from": "human"|"gpt", "value"}]}. Only samples with an image are kept,
    as in the reference (LLaVA-665K's ~40K text-only ShareGPT samples are dropped).
  chat JSONL (GenQA exported with `datasets`' to_json): {"messages": [{"role", "content"}]} per
    line; other fields are ignored. The first `limit` after a seeded shuffle are kept.

Order (the reference's tools/mix_genqa-500k_llava-665k.py): image samples are grouped by their
image folder (the path's first component: coco, gqa, ocr_vqa, textvqa, vg), each group and the
chats are shuffled with the seed, and the groups are merged so that each is spread evenly over the
result (readers.interleave_evenly; the reference picks the group furthest behind its share, the
same schedule). Training reads the files in this order (no shuffling at load time).

Outputs (LLaVA JSON / chat JSONL that tfds_builders.build_dataset turns into ArrayRecord):
  image.json  image samples, groups evenly mixed (stages 2 and 3)
  mix.json    image samples and chats, all groups evenly mixed (stage 1)
  text.jsonl  chats (stage 0)
"""
from __future__ import annotations

import collections
import json
import os
import random
from typing import Any

from graft_jax.data.converters.common import read_json
from graft_jax.data.errors import DataFormatError
from graft_jax.data.readers import interleave_evenly

ROLES = {"user": "human", "assistant": "gpt"}


def image_samples(llava_json: str) -> tuple[list[dict], int]:
  """(LLaVA records that have an image, number of text-only records dropped)."""
  records = read_json(llava_json)
  if not isinstance(records, list):
    raise DataFormatError(f"{llava_json}: expected a JSON list of LLaVA samples")
  kept = [r for r in records if isinstance(r, dict) and r.get("image")]
  return kept, len(records) - len(kept)


def image_group(record: dict) -> str:
  """The image folder a LLaVA sample's image lives in ("coco", "gqa", ...; "" for a bare name)."""
  parts = str(record["image"]).replace("\\", "/").split("/")
  return parts[0] if len(parts) > 1 else ""


def read_chats(path: str, limit: int, seed: int) -> tuple[list[dict], dict[str, int]]:
  """(up to `limit` chats as LLaVA records without image, seeded order; skip counts by reason).
  A line that is not JSON, lacks a "messages" list, or holds a role other than user/assistant is
  skipped and counted."""
  chats, skips = [], collections.Counter()
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        skips["malformed_json"] += 1
        continue
      messages = record.get("messages") if isinstance(record, dict) else None
      if not isinstance(messages, list) or not messages:
        skips["no_messages"] += 1
        continue
      if any(not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str)
             for m in messages):
        skips["other_role"] += 1
        continue
      chats.append({"id": str(record.get("id", f"chat-{lineno}")),
                    "conversations": [{"from": ROLES[m["role"]], "value": m["content"]} for m in messages]})
  random.Random(seed).shuffle(chats)
  return chats[:limit] if limit else chats, dict(skips)


def mixed_order(images: list[dict], chats: list[dict], seed: int) -> list[dict]:
  """Image samples grouped by folder and `chats`, each shuffled with `seed`, merged evenly."""
  groups: dict[str, list[dict]] = collections.defaultdict(list)
  for r in images:
    groups[image_group(r)].append(r)
  rng = random.Random(seed)
  ordered = []
  for name in sorted(groups):
    rng.shuffle(groups[name])
    ordered.append(groups[name])
  if chats:
    ordered.append(list(chats))
  return interleave_evenly(ordered)


def write_training_files(out_dir: str, llava_json: str = "", chat_jsonl: str = "", *, chat_limit: int = 500_000,
                         seed: int = 0) -> dict[str, Any]:
  """Writes image.json and mix.json (with a LLaVA file) and text.jsonl (with a chat file) under
  out_dir. Returns {"files": {kind: path}, "counts": {...}, "chat_skips": {...}}."""
  os.makedirs(out_dir, exist_ok=True)
  images, dropped = image_samples(llava_json) if llava_json else ([], 0)
  chats, skips = read_chats(chat_jsonl, chat_limit, seed) if chat_jsonl else ([], {})
  files, counts = {}, {"image_samples": len(images), "text_only_dropped": dropped, "chats": len(chats)}
  if images:
    files["image"] = _dump(os.path.join(out_dir, "image.json"), mixed_order(images, [], seed))
    files["mix"] = _dump(os.path.join(out_dir, "mix.json"), mixed_order(images, chats, seed))
  if chats:
    path = os.path.join(out_dir, "text.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      for c in chats:
        messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                    for t in c["conversations"]]
        f.write(json.dumps({"id": c["id"], "messages": messages}, ensure_ascii=False) + "\n")
    files["text"] = path
  return {"files": files, "counts": counts, "chat_skips": skips}


def _dump(path: str, records: list[dict]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(records, f, ensure_ascii=False)
  return path
