"""Zero-shot grafting: an encoder package trained on a surrogate, rebound into the full target."""
from __future__ import annotations

from graft_jax.models.config import LlamaConfig
from graft_jax.surrogate import graft
from graft_jax.train.checkpoint import check_package_matches, load_encoder_package, target_identity
from graft_jax.train.model_setup import tokenizer_fingerprint


def load_package_for(package_dir: str, llm_config: LlamaConfig, tokenizer) -> tuple[dict, dict]:
  """({"img", "proj"}, metadata) of a package, refused (naming every difference) unless it was made
  for this target's hidden size, vocabulary, depth and tokenizer."""
  params, metadata = load_encoder_package(package_dir)
  check_package_matches(metadata, target_identity(llm_config, tokenizer_fingerprint(tokenizer)))
  return params, metadata


def graft_package(target_llm: dict, llm_config: LlamaConfig, tokenizer, package_dir: str
                  ) -> tuple[dict, dict]:
  """({"img", "proj", "llm": the untouched full target}, package metadata): the zero-shot graft."""
  encoder, metadata = load_package_for(package_dir, llm_config, tokenizer)
  return graft({"llm": target_llm}, encoder), metadata
