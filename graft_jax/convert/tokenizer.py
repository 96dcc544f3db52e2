"""Tokenizers through transformers, from an HF directory or a GGUF file."""
from __future__ import annotations

import functools
import os

from graft_jax.assets import default_gguf_path


@functools.lru_cache(maxsize=8)
def load_tokenizer(source: str | None = None):
  """A transformers tokenizer for `source`: an HF model directory, a `.gguf` file, or None
  for the embedded default (SmolLM2-135M-Instruct). Cached: building one from a GGUF takes ~8 s."""
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top

  source = source or default_gguf_path()
  if not os.path.exists(source):
    raise FileNotFoundError(f"No tokenizer source at {source!r} (expected an HF directory or a .gguf file).")
  if os.path.isfile(source):
    if not source.endswith(".gguf"):
      raise ValueError(f"{source!r} is a file but not a .gguf; give an HF model directory or a GGUF file.")
    return AutoTokenizer.from_pretrained(os.path.dirname(source), gguf_file=os.path.basename(source))
  return AutoTokenizer.from_pretrained(source)
