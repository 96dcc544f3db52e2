"""`configs/data.py` end to end on a small size: files, ArrayRecord copies and statistics."""

from graft_jax.data.tfds_builders import load_source
from graft_jax.main import run_task
from tests.config_files import load_config


def _config(tmp_path):
  config = load_config("data")
  config.out_dir, config.data_dir = str(tmp_path / "out"), str(tmp_path / "tfds")
  config.shapes_splits = (("train", 12), ("val", 4), ("test", 4))
  config.text_splits = (("train", 10), ("val", 3))
  return config


def test_data_task_writes_datasets_and_statistics(tmp_path):
  report = run_task(_config(tmp_path))
  assert report["shapes/train"]["samples"] == 12 and report["shapes/train"]["image_samples"] == 12
  assert report["shapes/train"]["image_tokens"] == 12 * 67
  assert report["text/val"]["samples"] == 3 and report["text/val"]["image_tokens"] == 0
  assert all(r["skipped"] == 0 and r["supervised_tokens"] > 0 for r in report.values())
  assert len(load_source("graft_shapes", "test", str(tmp_path / "tfds"))) == 4
  assert (tmp_path / "out" / "stats.json").exists()
  assert len(list((tmp_path / "out" / "shapes" / "images" / "train").glob("*.png"))) == 12
