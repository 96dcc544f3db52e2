"""transformers CLIP / SigLIP vision towers (safetensors + config.json) <-> graft_jax ViT params.

Accepts a `save_pretrained` directory of CLIPVisionModel, SiglipVisionModel, or the full CLIPModel /
SiglipModel (whose vision tower lives under `vision_model.` and its config under `vision_config`);
text towers and SigLIP's pooling head are ignored.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
from flax import traverse_util

from graft_jax.convert.safetensors_io import SafetensorsCheckpoint
from graft_jax.models.vit import VitConfig, param_shapes

# model_type in config.json -> our variant.
_MODEL_TYPES = {"clip_vision_model": "clip", "clip": "clip",
                "siglip_vision_model": "siglip", "siglip": "siglip"}
_HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
            "gelu_new": "gelu_tanh"}
# transformers' CLIPVisionConfig / SiglipVisionConfig defaults: older hub configs omit fields.
_HF_DEFAULTS = {
    "clip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "siglip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                   layer_norm_eps=1e-6),
}


class Hook(NamedTuple):
  """How one HF tensor becomes ours: `apply` maps HF layout to ours; `hf_shape` maps our shape
  back to the HF shape, for error messages; `to_hf` maps our layout back to HF's (export)."""
  apply: Callable[[np.ndarray], np.ndarray]
  hf_shape: Callable[[tuple], tuple]
  to_hf: Callable[[np.ndarray], np.ndarray]


SAME = Hook(lambda x: x, lambda s: s, lambda x: x)
LINEAR = Hook(lambda w: w.T, lambda s: s[::-1], lambda w: w.T)  # torch [out, in] <-> [in, out]
CONV = Hook(lambda w: w.transpose(2, 3, 1, 0),  # torch [out, in, kh, kw] <-> [kh, kw, in, out]
            lambda s: (s[3], s[2], s[0], s[1]), lambda w: w.transpose(3, 2, 0, 1))

# (HF name without the `vision_model.` prefix, our path, hook). Names with `{i}` are per layer and
# are stacked on axis 0 of `blocks`. Entries whose path the variant lacks (cls_token and pre_ln for
# siglip, the patch bias for clip) are skipped.
TABLE: list[tuple[str, str, Hook]] = [
    ("embeddings.patch_embedding.weight", "patch_embed/kernel", CONV),
    ("embeddings.patch_embedding.bias", "patch_embed/bias", SAME),
    ("embeddings.class_embedding", "cls_token", SAME),
    ("embeddings.position_embedding.weight", "pos_embed", SAME),
    ("pre_layrnorm.weight", "pre_ln/scale", SAME),
    ("pre_layrnorm.bias", "pre_ln/bias", SAME),
    ("encoder.layers.{i}.layer_norm1.weight", "blocks/ln1/scale", SAME),
    ("encoder.layers.{i}.layer_norm1.bias", "blocks/ln1/bias", SAME),
    ("encoder.layers.{i}.self_attn.q_proj.weight", "blocks/attn/q_proj/kernel", LINEAR),
    ("encoder.layers.{i}.self_attn.q_proj.bias", "blocks/attn/q_proj/bias", SAME),
    ("encoder.layers.{i}.self_attn.k_proj.weight", "blocks/attn/k_proj/kernel", LINEAR),
    ("encoder.layers.{i}.self_attn.k_proj.bias", "blocks/attn/k_proj/bias", SAME),
    ("encoder.layers.{i}.self_attn.v_proj.weight", "blocks/attn/v_proj/kernel", LINEAR),
    ("encoder.layers.{i}.self_attn.v_proj.bias", "blocks/attn/v_proj/bias", SAME),
    ("encoder.layers.{i}.self_attn.out_proj.weight", "blocks/attn/out_proj/kernel", LINEAR),
    ("encoder.layers.{i}.self_attn.out_proj.bias", "blocks/attn/out_proj/bias", SAME),
    ("encoder.layers.{i}.layer_norm2.weight", "blocks/ln2/scale", SAME),
    ("encoder.layers.{i}.layer_norm2.bias", "blocks/ln2/bias", SAME),
    ("encoder.layers.{i}.mlp.fc1.weight", "blocks/mlp/fc1/kernel", LINEAR),
    ("encoder.layers.{i}.mlp.fc1.bias", "blocks/mlp/fc1/bias", SAME),
    ("encoder.layers.{i}.mlp.fc2.weight", "blocks/mlp/fc2/kernel", LINEAR),
    ("encoder.layers.{i}.mlp.fc2.bias", "blocks/mlp/fc2/bias", SAME),
    ("post_layernorm.weight", "post_ln/scale", SAME),
    ("post_layernorm.bias", "post_ln/bias", SAME),
]


def vit_config_from_hf(config: Mapping[str, Any], **overrides: Any) -> VitConfig:
  """VitConfig from a transformers config.json dict (vision model, or full CLIP/SigLIP model).

  `overrides` set VitConfig fields HF doesn't describe (param_dtype, dtype, remat)."""
  model_type = config.get("model_type")
  if model_type not in _MODEL_TYPES:
    raise ValueError(f"config.json model_type {model_type!r} is not a CLIP/SigLIP vision model; "
                     f"expected one of {sorted(_MODEL_TYPES)}.")
  variant = _MODEL_TYPES[model_type]
  if model_type in ("clip", "siglip"):
    config = config.get("vision_config") or {}
  c = {**_HF_DEFAULTS[variant], **config}
  if c["num_channels"] != 3:
    raise ValueError(f"Only RGB encoders are supported; config.json has num_channels={c['num_channels']}.")
  if c["hidden_act"] not in _HF_ACTS:
    raise ValueError(f"Unsupported hidden_act {c['hidden_act']!r}; supported: {sorted(_HF_ACTS)}.")
  fields = dict(image_size=c["image_size"], patch_size=c["patch_size"], width=c["hidden_size"],
                depth=c["num_hidden_layers"], heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                layer_norm_eps=c["layer_norm_eps"], variant=variant, act=_HF_ACTS[c["hidden_act"]])
  return VitConfig(**{**fields, **overrides})


def convert_state_dict(state_dict: Mapping[str, Any], config: VitConfig) -> dict:
  """Params tree (numpy arrays in config.param_dtype) from an HF vision state dict of numpy-convertible
  tensors. Names may carry the `vision_model.` prefix (full models, older saves) or not."""
  prefix = "vision_model." if "vision_model.post_layernorm.weight" in state_dict else ""
  hf = lambda name: prefix + name
  _check_layer_count(state_dict, prefix, config.depth)
  expected = traverse_util.flatten_dict(param_shapes(config), sep="/")
  dtype = np.dtype(config.param_dtype)

  flat, missing = {}, []
  for pattern, path, hook in TABLE:
    if path not in expected:
      continue
    shape = expected[path].shape
    per_layer = "{i}" in pattern
    names = [pattern.format(i=i) for i in range(config.depth)] if per_layer else [pattern]
    want = hook.hf_shape(shape[1:] if per_layer else shape)
    tensors = []
    for name in names:
      if hf(name) not in state_dict:
        missing.append(hf(name))
        continue
      t = np.asarray(state_dict[hf(name)])
      if tuple(t.shape) != tuple(want):
        raise ValueError(f"Tensor {hf(name)!r} has shape {tuple(t.shape)}, but the config expects {tuple(want)}.")
      tensors.append(hook.apply(t).astype(dtype))
    if len(tensors) == len(names):
      flat[path] = np.stack(tensors) if per_layer else tensors[0]
  if missing:
    shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
    raise ValueError(f"The checkpoint lacks tensors the {config.variant} config needs: {shown}.")
  unmapped = sorted(set(expected) - set(flat))
  if unmapped:  # the table and the module disagree: a bug here, not in the checkpoint
    raise AssertionError(f"No TABLE entry fills {unmapped}.")
  return traverse_util.unflatten_dict(flat, sep="/")


def load_hf_vision(model_dir: str, **overrides: Any) -> tuple[VitConfig, dict]:
  """(VitConfig, params) from a `save_pretrained` directory: config.json plus model.safetensors
  (or sharded model-*.safetensors with model.safetensors.index.json). `overrides` as in
  vit_config_from_hf."""
  config_path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"No config.json in {model_dir!r} (expected a transformers save_pretrained directory).")
  with open(config_path) as f:
    config = vit_config_from_hf(json.load(f), **overrides)
  return config, convert_state_dict(SafetensorsCheckpoint(model_dir), config)


_EXPORT_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def save_hf_vision(params: Mapping[str, Any], config: VitConfig, model_dir: str) -> None:
  """Writes `params` (a clip-variant ViT) as a transformers CLIPVisionModel `save_pretrained`
  directory (config.json + model.safetensors), which load_hf_vision and transformers both read."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  if config.variant != "clip":
    raise ValueError(f"Only clip-variant encoders are exported; this one is {config.variant!r}")
  flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(params)), sep="/")
  tensors = {}
  for pattern, path, hook in TABLE:
    if path not in flat:
      continue
    if "{i}" in pattern:
      for i in range(config.depth):
        tensors["vision_model." + pattern.format(i=i)] = np.ascontiguousarray(hook.to_hf(flat[path][i]))
    else:
      tensors["vision_model." + pattern] = np.ascontiguousarray(hook.to_hf(flat[path]))
  hf_config = {"model_type": "clip_vision_model", "architectures": ["CLIPVisionModel"],
               "hidden_size": config.width, "intermediate_size": config.mlp_dim,
               "num_hidden_layers": config.depth, "num_attention_heads": config.heads, "num_channels": 3,
               "image_size": config.image_size, "patch_size": config.patch_size,
               "hidden_act": _EXPORT_ACTS[config.activation], "layer_norm_eps": config.layer_norm_eps,
               "torch_dtype": "float32"}
  os.makedirs(model_dir, exist_ok=True)
  save_file({k: v.astype(np.float32) for k, v in tensors.items()}, os.path.join(model_dir, "model.safetensors"))
  with open(os.path.join(model_dir, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=1)


def _check_layer_count(state_dict: Mapping[str, Any], prefix: str, depth: int) -> None:
  layer = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
  found = {int(m.group(1)) for m in map(layer.match, state_dict) if m}
  if found and max(found) >= depth:
    raise ValueError(f"The checkpoint has encoder layers up to {max(found)}, but the config says "
                     f"num_hidden_layers={depth}.")


