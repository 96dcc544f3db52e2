"""The command line: convert to Orbax and reload without the source; config errors."""
import os
import shutil
import subprocess
import sys

import numpy as np

from graft_jax.convert.load import load_model
from graft_jax.models.llama import Decoder
from tests.llama_helpers import hf_logits, tiny_hf_llama

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "graft_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_convert_then_reload_without_the_source(tmp_path):
  model = tiny_hf_llama(tied=False)
  src, out = tmp_path / "hf", tmp_path / "converted"
  model.save_pretrained(src)
  result = _main("--config=configs/convert.py", f"--config.source={src}", f"--config.out={out}",
                 "--config.save_tokenizer=False")
  assert result.returncode == 0, result.stderr[-2000:]
  tokens = np.arange(20).reshape(2, 10)
  expected = hf_logits(model, tokens)
  shutil.rmtree(src)
  params, config = load_model(str(out))
  logits = np.asarray(Decoder(config).apply({"params": params}, tokens)[0])
  assert np.abs(logits - expected).max() <= 1e-4


def test_converted_checkpoint_with_wrong_shapes_is_refused(tmp_path):
  tiny_hf_llama().save_pretrained(tmp_path / "hf")
  assert _main("--config=configs/convert.py", f"--config.source={tmp_path / 'hf'}",
               f"--config.out={tmp_path / 'c'}", "--config.save_tokenizer=False").returncode == 0
  cfg = (tmp_path / "c" / "model_config.json").read_text().replace('"intermediate_size": 48',
                                                                    '"intermediate_size": 40')
  (tmp_path / "c" / "model_config.json").write_text(cfg)
  try:
    load_model(str(tmp_path / "c"))
  except ValueError as e:
    assert "gate_proj/kernel: shape (3, 32, 48) != expected (3, 32, 40)" in str(e)
  else:
    raise AssertionError("a mis-shaped checkpoint loaded")


def test_unknown_config_key_is_an_error():
  result = _main("--config=configs/generate.py", "--config.model.no_such_key=1")
  assert result.returncode != 0
  assert "unknown config key 'no_such_key'" in result.stderr


def test_generate_prints_smollm2_reply():
  result = _main("--config=configs/generate.py", "--config.prompt=What is the capital of France?",
                 "--config.max_new_tokens=12")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Paris" in result.stdout
