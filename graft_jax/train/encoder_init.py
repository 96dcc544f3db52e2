"""A pretrained encoder as the starting `img` params of a stage (e.g. CLIP ViT-L/14-336 for the
paper's recipe), checked against the stage's encoder config."""
from __future__ import annotations

import jax
import numpy as np

from graft_jax.convert.vision import load_hf_vision
from graft_jax.models.vit import VitConfig

_FIELDS = ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim", "variant", "activation")


def pretrained_encoder(source: str, vit: VitConfig) -> dict:
  """The `img` params tree (host arrays in vit.param_dtype) of a transformers CLIP/SigLIP
  directory. Raises ValueError naming each field where the checkpoint differs from `vit`."""
  found, params = load_hf_vision(source, param_dtype=np.float32)
  diffs = [f"{k}: checkpoint {getattr(found, k)} != config {getattr(vit, k)}"
           for k in _FIELDS if getattr(found, k) != getattr(vit, k)]
  if diffs:
    raise ValueError(f"Encoder checkpoint {source!r} does not match the config's encoder: " + "; ".join(diffs))
  dtype = np.dtype(vit.param_dtype)
  return jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
