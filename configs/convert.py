"""Convert a GGUF file or HF safetensors directory into a graft_jax Orbax checkpoint.

  python -m graft_jax.main --config=configs/convert.py --config.source=DIR_OR_GGUF --config.out=DIR
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict({
      "task": "convert",
      "source": "",          # empty: the embedded SmolLM2-135M-Instruct GGUF
      "out": "",
      "param_dtype": "float32",
      "save_tokenizer": True,
  })
