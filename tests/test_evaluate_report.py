"""Evaluation reports: JSONL / JSON / Markdown written and read back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from graft_jax.data.errors import DataFormatError
from graft_jax.evaluate.report import flatten, markdown_table, read_jsonl, slug, write_jsonl, write_report

RESULTS = {
    "encoder on surrogate": {"overall": {"n": 4, "accuracy": 0.75, "yesno": {"f1": np.float32(0.5)}}},
    "grafted": {"overall": {"n": 4, "accuracy": 0.5}, "note": "a|b"},
}


def test_jsonl_round_trip_with_numpy_values(tmp_path):
  rows = [{"id": "0", "prediction": "Red.", "score": np.float64(0.25), "ids": np.arange(3)},
          {"id": "1", "prediction": "Ünïcode", "correct": True}]
  write_jsonl(str(tmp_path / "deep" / "s.jsonl"), rows)
  assert read_jsonl(str(tmp_path / "deep" / "s.jsonl")) == [
      {"id": "0", "prediction": "Red.", "score": 0.25, "ids": [0, 1, 2]},
      {"id": "1", "prediction": "Ünïcode", "correct": True}]


def test_read_jsonl_names_the_bad_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"a": 1}\n\n{"a": 2,,}\n')
  with pytest.raises(DataFormatError, match=f"{path}:3: malformed JSON"):
    read_jsonl(str(path))
  path.write_text('{"a": 1}\n[1, 2]\n')
  with pytest.raises(DataFormatError, match=f"{path}:2: expected a JSON object"):
    read_jsonl(str(path))


def test_flatten_and_markdown_table():
  assert flatten(RESULTS["encoder on surrogate"]) == {"overall/n": 4, "overall/accuracy": 0.75,
                                                      "overall/yesno/f1": 0.5}
  table = markdown_table(RESULTS).splitlines()
  assert table[0] == "| metric | encoder on surrogate | grafted |"
  assert table[1] == "|---|---|---|"
  assert table[2:] == ["| overall/n | 4 | 4 |", "| overall/accuracy | 0.7500 | 0.5000 |",
                       "| overall/yesno/f1 | 0.5000 | - |", "| note | - | a\\|b |"]
  rows = markdown_table(RESULTS, metrics=["overall/accuracy"], models_as="rows").splitlines()
  assert rows == ["| model | overall/accuracy |", "|---|---|", "| encoder on surrogate | 0.7500 |",
                  "| grafted | 0.5000 |"]
  with pytest.raises(ValueError, match="models_as"):
    markdown_table(RESULTS, models_as="diagonal")


def test_write_report(tmp_path):
  samples = {"encoder on surrogate": [{"id": "0", "correct": True}], "grafted": [{"id": "0", "correct": False}]}
  paths = write_report(str(tmp_path / "out"), RESULTS, samples)
  with open(paths["json"]) as f:
    assert json.load(f)["encoder on surrogate"]["overall"]["yesno"]["f1"] == 0.5
  assert open(paths["markdown"]).read() == markdown_table(RESULTS)
  assert paths["samples/grafted"] == str(tmp_path / "out" / "samples" / "grafted.jsonl")
  assert read_jsonl(str(tmp_path / "out" / "samples" / "encoder_on_surrogate.jsonl")) == [{"id": "0", "correct": True}]
  assert slug("Grafted (Llama-8B)") == "grafted_llama_8b"
  with pytest.raises(ValueError, match="collide"):
    write_report(str(tmp_path / "x"), RESULTS, {"a b": [], "a-b": []})
