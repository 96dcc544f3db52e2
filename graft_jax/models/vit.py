"""CLIP-style and SigLIP-style vision transformers, encoder blocks scanned over a stacked layer axis.

Params tree (plain arrays; L = depth, W = width, P = patch size, N = number of tokens):

  patch_embed: {kernel [P, P, 3, W], bias [W] (siglip only)}
  cls_token [W] (clip only), pos_embed [N, W], pre_ln {scale, bias} (clip only)
  blocks: {ln1, attn: {q_proj, k_proj, v_proj, out_proj}, ln2, mlp: {fc1, fc2}}, every leaf with a
          leading layer axis of size L; index i on that axis is HF `encoder.layers.{i}`
  post_ln: {scale, bias}
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.models.projector import OUTPUT_NORMS

VARIANTS = ("clip", "siglip")
ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}
_DEFAULT_ACT = {"clip": "quick_gelu", "siglip": "gelu_tanh"}
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class VitConfig:
  """Shape and numerics of a ViT. `act=None` picks the variant's activation (clip: quick_gelu,
  siglip: gelu_tanh); set it for checkpoints that differ (e.g. CLIP models trained with exact GELU).

  `output_norm` is the adapter's output normalisation (models/projector.py OUTPUT_NORMS; the ViT
  itself ignores it). It lives here so that every VLM built from an encoder config (training, the
  KL teacher, scoring, grafting from a package's `encoder_config`) rebuilds the same adapter."""
  image_size: int = 224
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  heads: int = 12
  mlp_dim: int = 3072
  layer_norm_eps: float = 1e-5
  variant: str = "clip"
  param_dtype: Any = jnp.float32
  dtype: Any = jnp.float32
  remat: str = "none"
  act: str | None = None
  output_norm: str = "none"

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"VitConfig.variant must be one of {VARIANTS}, got {self.variant!r}.")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"VitConfig.remat must be one of {tuple(REMAT_POLICIES)}, got {self.remat!r}.")
    if self.output_norm not in OUTPUT_NORMS:
      raise ValueError(f"VitConfig.output_norm must be one of {OUTPUT_NORMS}, got {self.output_norm!r}.")
    if self.act is not None and self.act not in ACTIVATIONS:
      raise ValueError(f"VitConfig.act must be one of {tuple(ACTIVATIONS)} or None, got {self.act!r}.")
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.")
    if self.width % self.heads:
      raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}.")

  @property
  def activation(self) -> str:
    return self.act or _DEFAULT_ACT[self.variant]

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def num_tokens(self) -> int:
    """Tokens the encoder outputs: patches, plus the class token for clip."""
    return self.num_patches + (1 if self.variant == "clip" else 0)


def _dense(cfg: VitConfig, features: int, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)


def _norm(cfg: VitConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)


class Attention(nn.Module):
  """Bidirectional multi-head self-attention with biased q/k/v/out projections."""
  config: VitConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float[B, N, W] -> float[B, N, W]."""
    cfg = self.config
    b, n, _ = x.shape
    heads = lambda t: t.reshape(b, n, cfg.heads, cfg.width // cfg.heads)
    q, k, v = (heads(_dense(cfg, cfg.width, name)(x)) for name in ("q_proj", "k_proj", "v_proj"))
    out = jax.nn.dot_product_attention(q, k, v)  # scale defaults to head_dim ** -0.5, as in HF
    return _dense(cfg, cfg.width, "out_proj")(out.reshape(b, n, cfg.width))


class Mlp(nn.Module):
  config: VitConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float[B, N, W] -> float[B, N, W]."""
    cfg = self.config
    h = ACTIVATIONS[cfg.activation](_dense(cfg, cfg.mlp_dim, "fc1")(x))
    return _dense(cfg, cfg.width, "fc2")(h)


class Block(nn.Module):
  """Pre-LN transformer block, shaped for nn.scan: x -> (x, None)."""
  config: VitConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, None]:
    """x: float[B, N, W] -> (float[B, N, W], None)."""
    cfg = self.config
    x = x + Attention(cfg, name="attn")(_norm(cfg, "ln1")(x))
    x = x + Mlp(cfg, name="mlp")(_norm(cfg, "ln2")(x))
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class VisionTransformer(nn.Module):
  """CLIP- or SigLIP-style ViT returning the last layer's tokens, post-layernorm applied to all."""
  config: VitConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: float[B, H, W, 3], already normalised, H = W = image_size.

    Returns float[B, N, width]: N = num_tokens (the class token first for clip)."""
    cfg = self.config
    if images.ndim != 4 or images.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise ValueError(f"Expected images of shape [B, {cfg.image_size}, {cfg.image_size}, 3], "
                       f"got {images.shape}.")
    clip = cfg.variant == "clip"
    x = nn.Conv(cfg.width, (cfg.patch_size, cfg.patch_size), strides=(cfg.patch_size, cfg.patch_size),
                padding="VALID", use_bias=not clip, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                name="patch_embed")(images.astype(cfg.dtype))
    x = x.reshape(x.shape[0], -1, cfg.width)  # row-major over the patch grid, like HF's flatten(2)
    init = nn.initializers.normal(0.02)
    if clip:
      cls = self.param("cls_token", init, (cfg.width,), cfg.param_dtype).astype(cfg.dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, cfg.width)), x], axis=1)
    x = x + self.param("pos_embed", init, (cfg.num_tokens, cfg.width), cfg.param_dtype).astype(cfg.dtype)
    if clip:
      x = _norm(cfg, "pre_ln")(x)

    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
    blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=cfg.depth)
    x, _ = blocks(cfg, name="blocks")(x)
    return _norm(cfg, "post_ln")(x)


def init_params(config: VitConfig, rng: jax.Array) -> dict:
  """Randomly initialised params tree (plain arrays) for `config`."""
  images = jnp.zeros((1, config.image_size, config.image_size, 3), config.dtype)
  return VisionTransformer(config).init(rng, images)["params"]


def param_shapes(config: VitConfig) -> dict:
  """The params tree of `config` as jax.ShapeDtypeStruct leaves, without allocating anything."""
  return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def hf_layer_index(stacked_index: int, num_layers: int) -> int:
  """HF layer index of position `stacked_index` on the stacked `blocks` axis (negative counts from
  the end). The axis is in HF order: index i holds `encoder.layers.{i}`, 0 next to the patch
  embedding, num_layers - 1 the last layer whose output (after post_ln) is the encoder's output."""
  if not -num_layers <= stacked_index < num_layers:
    raise IndexError(f"Layer {stacked_index} is out of range for {num_layers} layers.")
  return stacked_index % num_layers


def trainable_layer_mask(num_layers: int, last_k: int) -> np.ndarray:
  """bool[num_layers]: True for the last `last_k` encoder layers (along the stacked `blocks` axis).

  "Train the last k layers plus post-LN" means: `blocks` leaves trainable at the True positions,
  `post_ln` trainable, everything else (patch/pos/cls embeddings, pre_ln) frozen."""
  if not 0 <= last_k <= num_layers:
    raise ValueError(f"last_k must be in [0, {num_layers}], got {last_k}.")
  return np.arange(num_layers) >= num_layers - last_k
