"""Synthetic shapes (LLaVA JSON + PNG) and text chat (JSONL) sets: determinism, balance, and answers
that agree with the scenes they describe."""
from __future__ import annotations

import collections
import json
import os
import re

import numpy as np
import pytest

from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.data.encode import encode_samples
from graft_jax.data.readers import read_chat_jsonl, read_llava_json
from graft_jax.data.synthetic_shapes import COLORS, PLURALS, QUESTION_TYPES, SHAPES, Obj, generate_shapes_dataset, render
from graft_jax.data.synthetic_text import TOPICS, generate_text_dataset

SPLITS = {"train": 48, "val": 12}


@pytest.fixture(scope="session")
def smol():
  return load_tokenizer()


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("shapes")
  generate_shapes_dataset(str(out), seed=3, splits=SPLITS)
  return out


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("text")
  generate_text_dataset(str(out), seed=3, splits={"train": 300, "val": 20})
  return out


def tree_bytes(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      path = os.path.join(d, f)
      out[os.path.relpath(path, root)] = open(path, "rb").read()
  return out


def test_shapes_deterministic(shapes_dir, tmp_path):
  again = tmp_path / "again"
  generate_shapes_dataset(str(again), seed=3, splits=SPLITS)
  first, second = tree_bytes(shapes_dir), tree_bytes(again)
  assert len(first) == sum(SPLITS.values()) + len(SPLITS) + 1  # PNGs, one JSON per split, metadata
  assert first == second
  other = tmp_path / "other"
  generate_shapes_dataset(str(other), seed=4, splits=SPLITS)
  assert tree_bytes(other)["train.json"] != first["train.json"]
  # Growing a split keeps its first samples.
  small = tmp_path / "small"
  generate_shapes_dataset(str(small), seed=3, splits={"train": 10, "val": 12})
  small_bytes = tree_bytes(small)
  assert json.loads(small_bytes["train.json"]) == json.loads(first["train.json"])[:10]
  assert small_bytes["images/train/000009.png"] == first["images/train/000009.png"]
  assert small_bytes["val.json"] == first["val.json"]


def test_shapes_metadata_and_balance(shapes_dir):
  meta = json.loads((shapes_dir / "metadata.json").read_text())
  assert meta["seed"] == 3 and meta["image_size"] == 64
  for split, n in SPLITS.items():
    records = json.loads((shapes_dir / f"{split}.json").read_text())
    assert len(records) == n == meta["splits"][split]["samples"]
    types = collections.Counter(r["question_type"] for r in records)
    assert types == {t: n // len(QUESTION_TYPES) for t in QUESTION_TYPES} == meta["splits"][split]["question_types"]
    exists = collections.Counter(r["answer"] for r in records if r["question_type"] == "exists")
    assert exists["yes"] == exists["no"] == n // len(QUESTION_TYPES) // 2
    assert len({r["id"] for r in records}) == n


def check_answer(record):
  """Re-derives the answer from the record's objects."""
  objs = record["objects"]
  q = record["conversations"][0]["value"].replace("<image>", "").strip()
  a, qtype = record["answer"], record["question_type"]
  name = lambda o: f"{o['color']} {o['shape']}"
  if qtype == "caption":
    names = [f"a {name(o)}" for o in sorted(objs, key=lambda o: o["x"])]  # left to right
    assert a == (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
  elif qtype == "count":
    color = next((c for c in COLORS if f" {c} " in q), None)
    shape = next((s for s in SHAPES if PLURALS[s] in q), None)
    matching = [o for o in objs if (color is None or o["color"] == color) and (shape is None or o["shape"] == shape)]
    assert a == str(len(matching)) and int(a) >= 1
  elif qtype == "color":
    shape = next((s for s in SHAPES if re.search(rf"\bthe {s}\b", q)), None)  # else "the shape"
    matching = objs if shape is None else [o for o in objs if o["shape"] == shape]
    assert len(matching) == 1 and matching[0]["color"] == a
  elif qtype == "shape":
    (color,) = [c for c in COLORS if c in q]
    matching = [o for o in objs if o["color"] == color]
    assert len(matching) == 1 and matching[0]["shape"] == a
  elif qtype == "position":
    (obj,) = [o for o in objs if f"the {name(o)} " in q]
    v = obj["x"] if "left" in q else obj["y"]
    assert a == (("left" if "left" in q else "top") if v < 0.4 else ("right" if "left" in q else "bottom"))
    assert v < 0.4 or v > 0.6
  elif qtype == "exists":
    asked = re.fullmatch(r"Is there a (\w+ \w+) in the image\?", q).group(1)
    present = asked in {name(o) for o in objs}
    assert a == ("yes" if present else "no")
    assert record["pope"] == "positive" if present else record["pope"] in ("adversarial", "random")
    if record["pope"] == "adversarial":
      c, s = asked.split()
      assert any(o["color"] == c or o["shape"] == s for o in objs)


def test_shapes_answers_match_scenes(shapes_dir):
  for split in SPLITS:
    for record in json.loads((shapes_dir / f"{split}.json").read_text()):
      human, gpt = record["conversations"]
      assert (human["from"], gpt["from"]) == ("human", "gpt")
      assert human["value"].count("<image>") == 1
      assert gpt["value"] == record["answer"][0].upper() + record["answer"][1:] + "."
      assert 1 <= len(record["objects"]) <= 4
      check_answer(record)


def test_render_draws_the_objects():
  rng = np.random.default_rng(0)
  objs = [Obj("red", "square", 16, 16, 14), Obj("blue", "circle", 48, 48, 16), Obj("yellow", "cross", 16, 48, 16)]
  img = np.asarray(render(objs, "plain", 64, rng))
  assert img.shape == (64, 64, 3)
  for o in objs:
    assert tuple(img[int(o.y), int(o.x)]) == COLORS[o.color]
  corner = img[0, 0]
  assert corner[0] == corner[1] == corner[2] and (img[:3, 30:34] == corner).all()  # plain gray background
  assert tuple(img[int(16 - 6), int(48 - 6)]) == tuple(corner)  # a cross leaves its corners empty
  noisy = np.asarray(render(objs, "noisy", 64, np.random.default_rng(0))).astype(int)
  assert noisy[:3, 30:34].std() > 5


def test_shapes_read_back_and_encode(shapes_dir, smol):
  samples, skips = read_llava_json(str(shapes_dir / "train.json"))
  assert skips.total == 0 and len(samples) == SPLITS["train"]
  assert samples[0].extra["question_type"] == "caption"
  kept, skips = encode_samples(samples, smol, "chatml", "markers", max_len=512, image_len=67,
                               image_prompt_rng=np.random.default_rng(0))
  assert skips.total == 0 and all(e.has_image for _, e in kept)


def test_text_deterministic(text_dir, tmp_path):
  generate_text_dataset(str(tmp_path), seed=3, splits={"train": 300, "val": 20})
  assert tree_bytes(text_dir) == tree_bytes(tmp_path)
  generate_text_dataset(str(tmp_path / "b"), seed=4, splits={"train": 300, "val": 20})
  assert tree_bytes(tmp_path / "b")["train.jsonl"] != tree_bytes(text_dir)["train.jsonl"]


def test_text_reads_back_varied_and_correct(text_dir, smol):
  samples, skips = read_chat_jsonl(str(text_dir / "train.jsonl"))
  assert skips.total == 0 and len(samples) == 300
  assert {s.extra["topic"] for s in samples} == set(TOPICS)
  assert any(len(s.conversation) >= 4 for s in samples)
  assert len({s.conversation[0]["content"] for s in samples}) > 250
  checked = collections.Counter()
  for s in samples:
    for q, a in zip(s.conversation[::2], s.conversation[1::2]):
      q, a = q["content"], a["content"]
      if m := re.search(r"What is (\d+) (plus|minus|times) (\d+)\?", q):
        x, op, y = int(m.group(1)), m.group(2), int(m.group(3))
        assert str({"plus": x + y, "minus": x - y, "times": x * y}[op]) in a
        checked["arithmetic"] += 1
      if m := re.search(r"What is \"(\w+)\" reversed\?", q):
        assert f"\"{m.group(1)[::-1]}\"" in a
        checked["reverse"] += 1
      if m := re.search(r"Sort these numbers from smallest to largest: ([\d, ]+)\.", q):
        assert a == ", ".join(map(str, sorted(int(v) for v in m.group(1).split(", ")))) + "."
        checked["sort"] += 1
  assert min(checked.values()) > 0 and len(checked) == 3
  kept, skips = encode_samples(samples, smol, "chatml", "standard", max_len=256)
  assert skips.total == 0 and not any(e.has_image for _, e in kept)


def test_a_subset_of_question_types_is_taken_in_turn(tmp_path):
  meta = generate_shapes_dataset(str(tmp_path), seed=3, splits={"train": 8}, question_types=("color", "exists"))
  records = json.load(open(tmp_path / "train.json"))
  assert [r["question_type"] for r in records] == ["color", "exists"] * 4
  assert [r["answer"] for r in records if r["question_type"] == "exists"] == ["yes", "no", "yes", "no"]
  assert meta["question_types"] == ["color", "exists"]
  with pytest.raises(ValueError, match="subset"):
    generate_shapes_dataset(str(tmp_path / "bad"), splits={"train": 2}, question_types=("colour",))


def test_training_samples_can_ask_several_questions_about_one_image(tmp_path, smol):
  types = ("color", "shape", "count", "position", "exists")
  generate_shapes_dataset(str(tmp_path / "one"), seed=1, splits={"train": 20, "test": 5}, question_types=types)
  generate_shapes_dataset(str(tmp_path / "five"), seed=1, splits={"train": 20, "test": 5}, question_types=types,
                          turns={"train": 5})
  one = json.load(open(tmp_path / "one" / "train.json"))
  five = json.load(open(tmp_path / "five" / "train.json"))
  assert json.load(open(tmp_path / "one" / "test.json")) == json.load(open(tmp_path / "five" / "test.json"))
  turn_counts = []
  for a, b in zip(one, five):
    # the image and the first turn are the one-turn sample's
    assert b["conversations"][:2] == a["conversations"] and b["objects"] == a["objects"]
    assert (tmp_path / "one" / a["image"]).read_bytes() == (tmp_path / "five" / b["image"]).read_bytes()
    turns = b["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
    assert sum(t["value"].count("<image>") for t in turns) == 1
    assert len(b["extra_turns"]) == len(turns) // 2 - 1
    for (qtype, answer), (human, gpt) in zip(b["extra_turns"], zip(turns[2::2], turns[3::2])):
      check_answer({**b, "conversations": [human, gpt], "question_type": qtype, "answer": answer,
                    "pope": "positive" if answer == "yes" else "random"})
      assert gpt["value"] == answer[0].upper() + answer[1:] + "."
    turn_counts.append(len(turns) // 2)
  assert max(turn_counts) == 5 and min(turn_counts) >= 2
  samples, skips = read_llava_json(str(tmp_path / "five" / "train.json"))
  encoded, encode_skips = encode_samples(samples, smol, "chatml", "markers", max_len=512, image_len=19)
  assert len(encoded) == 20 and skips.total == encode_skips.total == 0


def test_a_cached_dataset_made_with_other_settings_is_refused(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from graft_jax.train.data_setup import check_shapes_metadata  # pylint: disable=g-import-not-at-top
  generate_shapes_dataset(str(tmp_path / "shapes"), seed=0, splits={"train": 2}, image_size=32,
                          question_types=("color",), turns={"train": 1})
  cfg = ml_collections.ConfigDict({"out_dir": str(tmp_path), "seed": 0, "image_size": 32,
                                   "question_types": ("color",), "train_turns": 1})
  check_shapes_metadata(cfg)  # the same settings: reused
  cfg.train_turns = 5
  with pytest.raises(ValueError, match=r"other settings.*'turns': \(\{'train': 1\}, \{'train': 5\}\)"):
    check_shapes_metadata(cfg)
