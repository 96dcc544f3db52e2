"""LLaVA JSON / chat JSONL readers (every bad input: its error or its counted skip), interleaving,
bulk encoding with skips, and dataset statistics."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.data.encode import encode_samples
from graft_jax.data.errors import DataFormatError, SampleError
from graft_jax.data.readers import Sample, interleave_evenly, read_chat_jsonl, read_llava_json
from graft_jax.data.stats import dataset_stats
from graft_jax.data.templates import EncodedSample


@pytest.fixture(scope="session")
def smol():
  return load_tokenizer()


def turn(who, text):
  return {"from": who, "value": text}


def qa(question="<image>\nWhat is it?", answer="A cat."):
  return [turn("human", question), turn("gpt", answer)]


@pytest.fixture
def image_dir(tmp_path):
  d = tmp_path / "imgs"
  d.mkdir()
  Image.new("RGB", (8, 6), (200, 10, 10)).save(d / "good.png")
  (d / "garbage.jpg").write_bytes(b"this is not an image at all")
  good = (d / "good.png").read_bytes()
  (d / "truncated.png").write_bytes(good[:len(good) // 2])
  return d


def write_json(path, obj):
  path.write_text(json.dumps(obj))
  return str(path)


def test_llava_json_good_and_counted_skips(tmp_path, image_dir, caplog):
  records = [
      {"id": "ok_image", "image": "good.png", "conversations": qa(), "answer": "cat"},
      {"id": "ok_text", "conversations": qa("Hello there", "Hi.")},
      {"id": "ok_abs", "image": str(image_dir / "good.png"), "conversations": qa("What is it? <image>")},
      {"id": "ok_later", "image": "good.png",
       "conversations": qa("Hi", "Hello.") + qa("<image>\nAnd this?", "A dog.")},
      {"id": "missing", "image": "nope.png", "conversations": qa()},
      {"id": "corrupt", "image": "garbage.jpg", "conversations": qa()},
      {"id": "truncated", "image": "truncated.png", "conversations": qa()},
      {"id": "marker_no_image", "conversations": qa()},
      {"id": "image_no_marker", "image": "good.png", "conversations": qa("What is it?")},
      {"id": "two_markers", "image": "good.png", "conversations": qa("<image> vs <image>?")},
      {"id": "two_images", "image": ["good.png", "good.png"], "conversations": qa()},
      {"id": "gpt_first", "conversations": [turn("gpt", "Hi."), turn("human", "Hello")]},
      {"id": "no_alternation", "conversations": [turn("human", "a"), turn("human", "b"), turn("gpt", "c")]},
      {"id": "system", "conversations": [turn("system", "Be nice."), turn("human", "a"), turn("gpt", "b")]},
      {"id": "dangling_user", "conversations": qa("Hi", "Hello.") + [turn("human", "Bye")]},
      {"id": "no_convs"},
      {"id": "bad_turn", "conversations": [{"from": "human"}, turn("gpt", "b")]},
      "not an object",
  ]
  path = write_json(image_dir / "data.json", records)  # image_root defaults to the file's directory
  with caplog.at_level(logging.WARNING):
    samples, skips = read_llava_json(path)
  assert [s.id for s in samples] == ["ok_image", "ok_text", "ok_abs", "ok_later"]
  assert samples[0].image == str(image_dir / "good.png") and samples[1].image is None
  assert samples[0].conversation == [{"role": "user", "content": "<image>\nWhat is it?"},
                                     {"role": "assistant", "content": "A cat."}]
  assert samples[0].extra == {"answer": "cat"}
  assert dict(skips.counts) == {
      "missing_image": 1, "corrupt_image": 2, "marker_without_image": 1, "image_without_marker": 1,
      "multiple_image_markers": 1, "multiple_images": 1, "not_user_first": 1, "not_alternating": 1,
      "unknown_role": 1, "ends_with_user": 1, "malformed_entry": 3}
  assert skips.total == 14
  assert "skipped 14 samples" in skips.summary() and "missing_image=1" in skips.summary()
  assert any("entry 4" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)
  assert any("id corrupt" in e for e in skips.examples["corrupt_image"])


def test_llava_json_raise_mode_names_the_entry(tmp_path, image_dir):
  path = write_json(image_dir / "data.json", [{"id": "a", "conversations": qa("Hi", "Yo.")},
                                               {"id": "b", "image": "nope.png", "conversations": qa()}])
  with pytest.raises(SampleError, match="entry 1 \\(id b\\).*no image file") as e:
    read_llava_json(path, on_error="raise")
  assert e.value.reason == "missing_image"


def test_image_check_exists_skips_decoding(image_dir):
  path = write_json(image_dir / "data.json", [{"id": "c", "image": "garbage.jpg", "conversations": qa()}])
  assert len(read_llava_json(path, image_check="exists")[0]) == 1
  assert read_llava_json(path, image_check="decode")[1].counts == {"corrupt_image": 1}


def test_llava_json_image_root(tmp_path, image_dir):
  path = write_json(tmp_path / "elsewhere.json", [{"id": "a", "image": "good.png", "conversations": qa()}])
  assert read_llava_json(path)[1].counts == {"missing_image": 1}
  samples, skips = read_llava_json(path, image_root=str(image_dir))
  assert skips.total == 0 and samples[0].image == str(image_dir / "good.png")


def test_llava_json_file_level_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.json"):
    read_llava_json(str(tmp_path / "nothing.json"))
  bad = tmp_path / "bad.json"
  bad.write_text('[\n {"id": "a",\n  "conversations": [}\n]')
  with pytest.raises(DataFormatError, match="bad.json:3:.*malformed JSON"):
    read_llava_json(str(bad))
  with pytest.raises(DataFormatError, match="expected a JSON list"):
    read_llava_json(write_json(tmp_path / "dict.json", {"id": "a"}))
  ok = write_json(tmp_path / "ok.json", [])
  with pytest.raises(ValueError, match="image_check"):
    read_llava_json(ok, image_check="maybe")
  with pytest.raises(ValueError, match="on_error"):
    read_llava_json(ok, on_error="ignore")


def test_chat_jsonl(tmp_path, image_dir):
  msg = lambda role, text: {"role": role, "content": text}
  lines = [
      json.dumps({"messages": [msg("user", "Hi"), msg("assistant", "Hello.")]}),
      "",
      '{"messages": [{"role": "user", "content": "Hi"}',  # line 3: malformed
      json.dumps({"id": "x", "messages": [msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2"),
                                          msg("assistant", "A2")], "topic": "t"}),
      json.dumps({"messages": [msg("assistant", "Hi"), msg("user", "Hello.")]}),
      json.dumps({"messages": [msg("user", "<image> What?"), msg("assistant", "Cat.")]}),
      json.dumps({"messages": [msg("user", "<image> What?"), msg("assistant", "Cat.")], "image": "good.png"}),
      json.dumps({"messages": "hello"}),
      json.dumps([1, 2]),
      json.dumps({"messages": [msg("user", "Hi"), {"role": "assistant", "content": None}]}),
  ]
  path = image_dir / "chat.jsonl"
  path.write_text("\n".join(lines) + "\n")
  samples, skips = read_chat_jsonl(str(path))
  assert [s.id for s in samples] == ["chat.jsonl:1", "x", "chat.jsonl:7"]
  assert samples[1].extra == {"topic": "t"} and len(samples[1].conversation) == 4
  assert samples[2].image == str(image_dir / "good.png")
  assert dict(skips.counts) == {"malformed_json": 1, "not_user_first": 1, "marker_without_image": 1,
                                "malformed_entry": 3}
  assert skips.examples["malformed_json"][0].startswith(f"{path}:3: malformed JSON")
  with pytest.raises(SampleError, match=f"{path}:3: malformed JSON") as e:
    read_chat_jsonl(str(path), on_error="raise")
  assert e.value.reason == "malformed_json"
  with pytest.raises(FileNotFoundError):
    read_chat_jsonl(str(tmp_path / "missing.jsonl"))


def test_interleave_evenly():
  a, b = [f"a{i}" for i in range(6)], [f"b{i}" for i in range(2)]
  assert interleave_evenly([a, b]) == ["a0", "a1", "b0", "a2", "a3", "a4", "b1", "a5"]
  assert interleave_evenly([]) == [] and interleave_evenly([[], [1, 2]]) == [1, 2]
  assert interleave_evenly([[1, 2, 3]]) == [1, 2, 3]
  assert interleave_evenly([[0, 0], [1, 1]]) == [0, 1, 0, 1]
  # The reference's ratio (665K image : 500K text), scaled down: every prefix holds each source
  # in proportion, to within one sample, and each source keeps its order.
  sources = [[("img", i) for i in range(665)], [("txt", i) for i in range(500)], [("x", i) for i in range(7)]]
  mixed = interleave_evenly(sources)
  assert sorted(mixed) == sorted(x for s in sources for x in s)
  total = len(mixed)
  for k, source in enumerate(sources):
    tag = source[0][0]
    assert [x for x in mixed if x[0] == tag] == source
    counts = np.cumsum([x[0] == tag for x in mixed])
    expected = np.arange(1, total + 1) * len(source) / total
    assert np.abs(counts - expected).max() <= 1.0, k
  assert interleave_evenly(sources) == mixed


def test_encode_samples_and_stats(smol):
  samples = [
      Sample("a", [{"role": "user", "content": "<image>\nWhat is it?"}, {"role": "assistant", "content": "Red."}], "/x.png"),
      Sample("b", [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Red."}]),
      Sample("c", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 40}]),
      Sample("d", [{"role": "assistant", "content": "Hi"}]),
      Sample("e", [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Red."}], "/y.png"),
  ]
  kept, skips = encode_samples(samples, smol, "chatml", "markers", max_len=30 + 5, image_len=5)
  assert [s.id for s, _ in kept] == ["a", "b"]
  assert dict(skips.counts) == {"too_long": 1, "not_user_first": 1, "image_without_marker": 1}
  assert any("sample c" in e and "exceeds max_len=35" in e for e in skips.examples["too_long"])
  encoded = [e for _, e in kept]
  # "b" is 14 tokens with 9 supervised (see test_data_templates); "a" adds the image prompt.
  assert len(encoded[1].ids) == 14 and encoded[1].num_supervised == 9
  stats = dataset_stats(encoded, image_len=5)
  n_a = len(encoded[0].ids)
  assert (stats.samples, stats.image_samples, stats.text_samples) == (2, 1, 1)
  assert stats.text_tokens_max == n_a and stats.text_tokens_mean == (n_a + 14) / 2
  assert stats.tokens_max == n_a + 5 and stats.tokens_mean == (n_a + 5 + 14) / 2
  assert stats.image_tokens == 5
  assert stats.supervised_tokens == encoded[0].num_supervised + 9 == 18
  assert "2 samples (1 with an image, 1 text-only)" in stats.summary()


def test_stats_by_hand():
  s1 = EncodedSample(np.arange(4, dtype=np.int32), np.array([0, 1, 1, 0], bool), image_pos=2)
  s2 = EncodedSample(np.arange(10, dtype=np.int32), np.array([1] * 3 + [0] * 7, bool))
  stats = dataset_stats([s1, s2], image_len=100)
  assert (stats.tokens_max, stats.tokens_mean, stats.text_tokens_mean) == (104, 57.0, 7.0)
  assert (stats.image_tokens, stats.supervised_tokens, stats.supervised_mean) == (100, 5, 2.5)
  with pytest.raises(ValueError, match="at least one"):
    dataset_stats([], image_len=1)
