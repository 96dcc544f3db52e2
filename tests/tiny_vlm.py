"""A tiny decoder over SmolLM2's vocabulary and small synthetic datasets, for end-to-end tests."""
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.tasks import data as data_task


def build_tiny(root, data, n_train: int):
  """Writes a 4-layer HF Llama (+ SmolLM2's tokenizer) to root/model and the datasets of `data`
  (n_train training samples each, 4 val/test) under root; returns (model dir, data config)."""
  torch.manual_seed(0)
  hf = LlamaForCausalLM(HFLlamaConfig(
      vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
      num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2))
  hf.save_pretrained(root / "model")
  load_tokenizer().save_pretrained(root / "model")
  data.out_dir, data.data_dir = str(root / "data"), str(root / "tfds")
  data.shapes_splits = (("train", n_train), ("val", 4), ("test", 4))
  data.text_splits = (("train", n_train), ("val", 4))
  cfg = data.copy_and_resolve_references()
  cfg.update({"image_len": 7, "tokenizer": "", "template": "chatml", "mode": "markers", "max_len": 256,
              "build_tfds": True})
  data_task.run(cfg)
  return str(root / "model"), data
