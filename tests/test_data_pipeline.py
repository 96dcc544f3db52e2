"""tfds ArrayRecord builders and the grain pipeline: round trip, skips at build time, bucketed
batches, determinism, per-host sharding, and exact resume from a saved iterator state."""
from __future__ import annotations

import json

import numpy as np
import pytest
from etils import epath
from PIL import Image

import grain
from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.data import batching
from graft_jax.data.images import preprocess_image
from graft_jax.data.pipeline import ConcatSource, make_dataset
from graft_jax.data.readers import read_chat_jsonl, read_llava_json
from graft_jax.data.synthetic_shapes import generate_shapes_dataset
from graft_jax.data.synthetic_text import generate_text_dataset
from graft_jax.data.templates import encode_conversation
from graft_jax.data.tfds_builders import build_dataset, from_record, load_source

IMAGE_SIZE = 16
N_SHAPES, N_TEXT = 20, 20


@pytest.fixture(scope="module")
def smol():
  return load_tokenizer()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  generate_shapes_dataset(str(root / "shapes"), seed=3, splits={"train": N_SHAPES, "val": 4}, image_size=24)
  generate_text_dataset(str(root / "text"), seed=3, splits={"train": N_TEXT})
  data_dir = str(root / "tfds")
  build_dataset("shapes", {"train": str(root / "shapes/train.json"), "val": str(root / "shapes/val.json")},
                None, data_dir)
  build_dataset("text", {"train": str(root / "text/train.jsonl")}, None, data_dir)
  return root, data_dir


def sources(data_dir):
  return [load_source("shapes", "train", data_dir), load_source("text", "train", data_dir)]


def pipeline(smol, source, **kw):
  args = dict(template="chatml", mode="markers", max_len=160, batch_size=4, image_size=IMAGE_SIZE,
              image_len=6, seed=0, shard_index=0, shard_count=1, buckets=(32, 64, 96, 160), num_threads=2)
  args.update(kw)
  return make_dataset(source, smol, **args)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_round_trip_matches_readers(built):
  root, data_dir = built
  for name, split, path, reader in [("shapes", "train", root / "shapes/train.json", read_llava_json),
                                    ("shapes", "val", root / "shapes/val.json", read_llava_json),
                                    ("text", "train", root / "text/train.jsonl", read_chat_jsonl)]:
    samples, _ = reader(str(path))
    source = load_source(name, split, data_dir)
    assert len(source) == len(samples) > 0
    for i, sample in enumerate(samples):
      record = from_record(source[i])
      assert record["id"] == sample.id
      assert record["conversation"] == sample.conversation
      assert record["extra"] == sample.extra
      expected = open(sample.image, "rb").read() if sample.image else b""
      assert record["image"] == expected
  assert from_record(load_source("shapes", "train", data_dir)[0])["extra"]["question_type"] == "caption"


def test_build_counts_and_skips_bad_samples(tmp_path):
  Image.new("RGB", (10, 7), (0, 200, 0)).save(tmp_path / "good.png")
  (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  qa = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
  llava = [
      {"id": "ok", "image": "good.png", "conversations": qa("<image>\nWhat color?", "Green.")},
      {"id": "gone", "image": "missing.png", "conversations": qa("<image>\nWhat?", "X.")},
      {"id": "bad", "image": "corrupt.png", "conversations": qa("<image>\nWhat?", "X.")},
      {"id": "nomarker", "image": "good.png", "conversations": qa("What?", "X.")},
      {"id": "text", "conversations": qa("Hi", "Hello.")},
  ]
  (tmp_path / "l.json").write_text(json.dumps(llava))
  lines = [json.dumps({"id": "c0", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}]}),
           '{"id": "c1", "messages": [',
           json.dumps({"id": "c2", "messages": [{"role": "robot", "content": "Hi"}]}),
           json.dumps({"id": "c3", "messages": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."}]})]
  (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
  data_dir = str(tmp_path / "tfds")

  builder = build_dataset("mixed", {"img": str(tmp_path / "l.json"), "chat": str(tmp_path / "c.jsonl")},
                          str(tmp_path), data_dir)
  assert dict(builder.skips["img"].counts) == {"missing_image": 1, "corrupt_image": 1, "image_without_marker": 1}
  assert dict(builder.skips["chat"].counts) == {"malformed_json": 1, "unknown_role": 1}
  assert [from_record(r)["id"] for r in load_source("mixed", "img", data_dir)] == ["ok", "text"]
  assert [from_record(r)["id"] for r in load_source("mixed", "chat", data_dir)] == ["c0", "c3"]
  assert from_record(load_source("mixed", "img", data_dir)[0])["image"] == (tmp_path / "good.png").read_bytes()
  # The counts travel with the build, for whoever loads it later.
  again = build_dataset("mixed", {"chat": str(tmp_path / "c.jsonl")}, str(tmp_path), data_dir)
  assert again.info.metadata["skips"]["img"]["counts"]["missing_image"] == 1


def test_batches_are_bucketed_and_match_direct_encoding(built, smol):
  root, data_dir = built
  seed, buckets = 5, (32, 64, 96, 160)
  ds, skips = pipeline(smol, sources(data_dir), seed=seed, num_epochs=1, drop_remainder=False)
  batches = list(ds)
  source = ConcatSource(sources(data_dir))
  assert len(batches) == -(-len(source) // 4) and skips.total == 0
  lengths, seen_image, seen_text = set(), False, False
  for b in batches:
    bsz, t = b["tokens"].shape
    assert bsz == 4 and t in buckets
    assert b["images"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and b["images"].dtype == np.float32
    assert b["tokens"].dtype == np.int32 and b["image_pos"].dtype == np.int32
    assert b["loss_mask"].dtype == b["valid"].dtype == b["has_image"].dtype == bool
    n = b["valid"].sum(1)
    assert t == batching.bucket_length(int(n.max()), buckets)
    assert not (b["loss_mask"] & ~b["valid"]).any()
    for row in range(4):
      index = int(b["record_index"][row])
      if index < 0:  # the last batch's padding rows
        assert n[row] == 0 and not b["has_image"][row]
        continue
      lengths.add(int(n[row]))
      record = from_record(source[index])
      enc = encode_conversation(record["conversation"], smol, "chatml", "markers",
                                image_prompt_rng=np.random.default_rng([seed, 0, index]))
      assert np.array_equal(b["valid"][row], np.arange(t) < len(enc.ids))
      np.testing.assert_array_equal(b["tokens"][row, :n[row]], enc.ids)
      np.testing.assert_array_equal(b["loss_mask"][row, :n[row]], enc.loss_mask)
      assert (b["tokens"][row, n[row]:] == 0).all()
      assert b["image_pos"][row] == enc.image_pos and b["has_image"][row] == (enc.image_pos >= 0)
      if record["image"]:
        seen_image = True
        np.testing.assert_array_equal(b["images"][row], preprocess_image(record["image"], IMAGE_SIZE))
      else:
        seen_text = True
        assert not b["images"][row].any()
  assert seen_image and seen_text and len(lengths) > 3


def test_same_seed_same_batches_other_seed_other_order(built, smol):
  _, data_dir = built
  a = take(iter(pipeline(smol, sources(data_dir), seed=11)[0]), 4)
  b = take(iter(pipeline(smol, sources(data_dir), seed=11)[0]), 4)
  c = take(iter(pipeline(smol, sources(data_dir), seed=12)[0]), 4)
  assert_batches_equal(a, b)
  order = lambda batches: np.concatenate([x["record_index"] for x in batches]).tolist()
  assert order(a) != order(c)
  unshuffled = take(iter(pipeline(smol, sources(data_dir), shuffle=False)[0]), 2)
  assert order(unshuffled) == list(range(8))
  # One process: the default shard (jax.process_index()/process_count()) is all of it.
  assert_batches_equal(take(iter(pipeline(smol, sources(data_dir), seed=11, shard_index=None, shard_count=None)[0]), 4), a)


def test_shards_are_disjoint_and_cover_each_epoch(built, smol):
  _, data_dir = built
  total = N_SHAPES + N_TEXT
  per_shard = []
  for shard in (0, 1):
    ds, _ = pipeline(smol, sources(data_dir), shard_index=shard, shard_count=2, num_epochs=2,
                     batch_size=3, drop_remainder=False)
    indices = np.concatenate([b["record_index"] for b in ds])
    indices = indices[indices >= 0].tolist()
    half = len(indices) // 2
    assert sorted(indices[:half]) == sorted(indices[half:])  # each epoch: the shard's records once
    assert indices[:half] != indices[half:]  # reshuffled per epoch
    per_shard.append(set(indices[:half]))
  assert not per_shard[0] & per_shard[1]
  assert per_shard[0] | per_shard[1] == set(range(total))
  with pytest.raises(ValueError, match="shard_index"):
    pipeline(smol, sources(data_dir), shard_index=2, shard_count=2)


def test_restored_iterator_continues_exactly(built, smol, tmp_path):
  _, data_dir = built
  # 20 shape records in batches of 4: the 9 batches span two epochs (reshuffled, new prompts).
  source = load_source("shapes", "train", data_dir)
  uninterrupted = take(iter(pipeline(smol, source, seed=7)[0]), 9)

  it = iter(pipeline(smol, load_source("shapes", "train", data_dir), seed=7)[0])
  assert_batches_equal(take(it, 3), uninterrupted[:3])
  state = json.loads(json.dumps(it.get_state()))
  take(it, 2)  # the old iterator moves on; the state must not follow it

  fresh = iter(pipeline(smol, load_source("shapes", "train", data_dir), seed=7)[0])
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 6), uninterrupted[3:])

  # The same through grain's Orbax handler (what a training checkpoint stores).
  it = iter(pipeline(smol, source, seed=7)[0])
  take(it, 4)
  directory = epath.Path(tmp_path / "grain")
  directory.mkdir()
  grain.checkpoint.CheckpointHandler().save(directory, item=it)
  restored = grain.checkpoint.CheckpointHandler().restore(directory, item=iter(pipeline(smol, source, seed=7)[0]))
  assert_batches_equal(take(restored, 5), uninterrupted[4:])


def test_too_long_samples_are_counted_not_truncated(built, smol):
  _, data_dir = built
  max_len = 40
  ds, skips = pipeline(smol, sources(data_dir), max_len=max_len, buckets=(16, 40), num_epochs=1,
                       drop_remainder=False)
  batches = list(ds)
  kept = np.concatenate([b["record_index"] for b in batches])
  kept = kept[kept >= 0]
  assert skips.counts["too_long"] > 0 and set(skips.counts) == {"too_long"}
  assert len(kept) + skips.counts["too_long"] == N_SHAPES + N_TEXT
  for b in batches:
    full = b["valid"].sum(1) + np.where(b["has_image"], 6, 0)
    assert (full <= max_len).all() and b["tokens"].shape[1] in (16, 40)
  with pytest.raises(ValueError, match="largest bucket"):
    pipeline(smol, sources(data_dir), max_len=200, buckets=(64, 128))


def test_buckets_and_concat_source():
  assert batching.default_buckets(512) == (64, 128, 256, 512)
  assert batching.default_buckets(600) == (64, 128, 256, 512, 600)
  assert batching.bucket_length(65, (64, 128)) == 128
  with pytest.raises(ValueError):
    batching.bucket_length(129, (64, 128))
  concat = ConcatSource([["a", "b"], [], ["c"]])
  assert len(concat) == 3 and [concat[i] for i in range(3)] == ["a", "b", "c"]
  with pytest.raises(IndexError):
    concat[3]
  with pytest.raises(ValueError, match="cannot collate"):
    batching.collate([], 2, (8,), 4)


def test_step_shapes_per_epoch_with_and_without_buckets(built, smol):
  from graft_jax.bench.bucket_count import exact_buckets, step_shapes
  _, data_dir = built
  kw = dict(template="chatml", mode="markers", max_len=160, batch_size=4, image_size=IMAGE_SIZE, image_len=6)
  bucketed = step_shapes(sources(data_dir), smol, buckets=(32, 64, 96, 160), **kw)
  exact = step_shapes(sources(data_dir), smol, buckets=exact_buckets(160), **kw)
  assert sum(bucketed.values()) == sum(exact.values()) == (N_SHAPES + N_TEXT) // 4
  assert {t for t, _ in bucketed} <= {32, 64, 96, 160}
  assert len(exact) > len(bucketed)  # each batch's own longest row: more shapes to compile
  assert all(c % 16 == 0 and c < t for t, c in bucketed)
