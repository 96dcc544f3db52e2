"""The attention switch: the causal-only path (no dense mask) equals the masked one, and the
default decoder is unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.models.block import attend
from graft_jax.models.config import LlamaConfig


def test_causal_without_a_mask_equals_the_dense_causal_mask():
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(kq, (2, 7, 4, 8))
  k, v = jax.random.normal(kk, (2, 7, 2, 8)), jax.random.normal(kv, (2, 7, 2, 8))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((7, 7), bool)), (2, 1, 7, 7))
  np.testing.assert_allclose(attend(q, k, v, None), attend(q, k, v, mask), atol=1e-6)


def test_attention_impl_is_validated_and_defaults_to_xla():
  base = dict(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4)
  assert LlamaConfig(**base).attention_impl == "xla"
  assert LlamaConfig(**base, attention_impl="cudnn").attention_impl == "cudnn"
  with pytest.raises(ValueError, match="attention_impl"):
    LlamaConfig(**base, attention_impl="flash")
