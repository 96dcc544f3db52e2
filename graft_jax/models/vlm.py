"""The VLM: ViT (`img`) -> adapter with start/end-of-image (`proj`) -> decoder (`llm`).

One forward for training and generation. Token sequences arrive with the image slot already
expanded (see `graft_jax.data.templates.expand_image_slot`): `image_len` placeholder ids at
`image_pos`, whose embeddings are overwritten here by [soi, image tokens, eoi]. Rows with
`image_pos < 0` are text-only and pass through untouched, so mixed batches work.

`image_noise` > 0 (training only; issue 9's lever): Gaussian noise on every image embedding,
relative to that embedding's own RMS norm (`add_relative_noise`), drawn from `noise_key` as given.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.llama import Cache, Decoder
from graft_jax.models.projector import Projector, token_embedding_rms
from graft_jax.models.vit import VisionTransformer, VitConfig


def splice_images(text_emb: jnp.ndarray, image_emb: jnp.ndarray, image_pos: jnp.ndarray) -> jnp.ndarray:
  """Writes image_emb float[B, M, D] into text_emb float[B, T, D] at rows' image_pos int[B]
  (rows with image_pos < 0 are left as they are)."""
  def one(text, image, pos):
    spliced = jax.lax.dynamic_update_slice(text, image.astype(text.dtype), (jnp.maximum(pos, 0), 0))
    return jnp.where(pos >= 0, spliced, text)
  return jax.vmap(one)(text_emb, image_emb, image_pos)


def add_relative_noise(embeddings: jnp.ndarray, sigma: float, key: jax.Array) -> jnp.ndarray:
  """float[B, M, D] -> float[B, M, D]: e + sigma * rms(e) * z, z ~ N(0, I) per embedding, rms(e) =
  sqrt(mean_d e^2) of each vector without gradient, so the noise keeps its share of every
  embedding whatever its norm (an encoder cannot outgrow it by scaling up)."""
  e32 = embeddings.astype(jnp.float32)
  rms = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(e32 * e32, axis=-1, keepdims=True)))
  noise = jax.random.normal(key, e32.shape, jnp.float32)
  return (e32 + sigma * rms * noise).astype(embeddings.dtype)


class VLM(nn.Module):
  """Params tree {"img", "proj", "llm"}; `llm` is the target or a surrogate (per `segments`)."""
  vit: VitConfig
  llm: LlamaConfig
  segments: Segments | None = None
  projector_depth: int = 2

  def setup(self):
    self.img = VisionTransformer(self.vit)
    self.proj = Projector(self.llm.hidden_size, self.projector_depth, dtype=self.llm.jnp_dtype,
                          param_dtype=self.llm.jnp_param_dtype, output_norm=self.vit.output_norm)
    self.decoder = Decoder(self.llm, self.segments, name="llm")

  @property
  def image_len(self) -> int:
    """Embeddings per image: the encoder's tokens plus start and end of image."""
    return self.vit.num_tokens + 2

  def image_embeddings(self, images: jnp.ndarray) -> jnp.ndarray:
    """float[B, H, W, 3] -> float[B, image_len, D]. With `vit.output_norm` "rms_token_scale" every
    embedding is scaled to the mean RMS norm of this decoder's token embeddings."""
    if self.vit.output_norm == "none":
      return self.proj(self.img(images))
    return self.proj(self.img(images), token_embedding_rms(self.decoder.embed.embedding))

  def embed_inputs(self, tokens: jnp.ndarray, images: jnp.ndarray, image_pos: jnp.ndarray,
                   image_noise: float = 0.0, noise_key: jax.Array | None = None) -> jnp.ndarray:
    """tokens int[B, T] (slot expanded), images float[B, H, W, 3], image_pos int[B] -> float[B, T, D].
    image_noise > 0: relative noise on the image embeddings, drawn from noise_key."""
    image_emb = self.image_embeddings(images)
    if image_noise > 0:
      if noise_key is None:
        raise ValueError("image_noise > 0 needs a noise_key")
      image_emb = add_relative_noise(image_emb, image_noise, noise_key)
    return splice_images(self.decoder.embed_tokens(tokens), image_emb, image_pos)

  def __call__(self, tokens, images, image_pos, positions=None, attention_mask=None,
               cache: Cache | None = None, cache_index=0, return_logits: bool = True,
               image_noise: float = 0.0, noise_key: jax.Array | None = None):
    """Decoder outputs (see `Decoder.__call__`) for a batch with images spliced in; image_noise and
    noise_key as in `embed_inputs` (0 everywhere but in training)."""
    embeddings = self.embed_inputs(tokens, images, image_pos, image_noise, noise_key)
    return self.decoder(embeddings=embeddings, positions=positions, attention_mask=attention_mask,
                        cache=cache, cache_index=cache_index, return_logits=return_logits)


def init_vlm_params(model: VLM, rng: jax.Array) -> dict:
  """Random {"img", "proj", "llm"} params (plain arrays)."""
  size = model.vit.image_size
  variables = model.init(rng, jnp.zeros((1, model.vit.num_tokens + 4), jnp.int32),
                         jnp.zeros((1, size, size, 3)), jnp.zeros((1,), jnp.int32))
  return nn.meta.unbox(variables["params"])
