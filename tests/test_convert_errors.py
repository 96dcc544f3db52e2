"""Bad model sources each give a clear error naming the problem."""
import json

import gguf
import numpy as np
import pytest

from graft_jax.convert.load import load_model
from tests.llama_helpers import tiny_hf_llama


def _edit_config(model_dir, **changes):
  path = model_dir / "config.json"
  cfg = json.loads(path.read_text())
  cfg.update(changes)
  path.write_text(json.dumps(cfg))


def test_missing_source(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_model(str(tmp_path / "nowhere"))


def test_directory_without_config(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    load_model(str(tmp_path))


def test_missing_weights_file(tmp_path):
  tiny_hf_llama().save_pretrained(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
    load_model(str(tmp_path))


def test_missing_shard(tmp_path):
  tiny_hf_llama().save_pretrained(tmp_path, max_shard_size="20KB")
  sorted(tmp_path.glob("model-*.safetensors"))[0].unlink()
  with pytest.raises(FileNotFoundError, match="shard files that are missing"):
    load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path):
  tiny_hf_llama().save_pretrained(tmp_path)
  _edit_config(tmp_path, model_type="mistral", architectures=["MistralForCausalLM"])
  with pytest.raises(ValueError, match="unsupported architecture model_type='mistral'"):
    load_model(str(tmp_path))


def test_malformed_config_json(tmp_path):
  tiny_hf_llama().save_pretrained(tmp_path)
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="malformed JSON"):
    load_model(str(tmp_path))


def test_weights_whose_shapes_do_not_match_the_config(tmp_path):
  tiny_hf_llama().save_pretrained(tmp_path)
  _edit_config(tmp_path, intermediate_size=40)
  with pytest.raises(ValueError, match=r"mlp\.(gate|up|down)_proj\.weight has shape .* needs"):
    load_model(str(tmp_path))


def test_config_with_more_layers_than_the_weights(tmp_path):
  tiny_hf_llama(layers=2).save_pretrained(tmp_path)
  _edit_config(tmp_path, num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"missing tensors .*model\.layers\.2\."):
    load_model(str(tmp_path))


def test_gguf_that_is_not_llama(tmp_path):
  path = str(tmp_path / "gpt2.gguf")
  writer = gguf.GGUFWriter(path, "gpt2")
  writer.add_block_count(1)
  writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ValueError, match="GGUF architecture is 'gpt2', not 'llama'"):
    load_model(path)


def test_file_that_is_not_gguf(tmp_path):
  path = tmp_path / "model.gguf"
  path.write_bytes(b"definitely not a gguf file" * 10)
  with pytest.raises(ValueError, match="not a readable GGUF file"):
    load_model(str(path))
