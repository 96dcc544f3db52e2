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


def test_cudnn_config_drops_the_dense_mask_only_for_plain_causal_forwards(monkeypatch):
  """On a CPU the cuDNN kernel is stood in for by XLA's; what is checked is what the decoder asks for."""
  from graft_jax.models.llama import Decoder, init_params
  original, calls = jax.nn.dot_product_attention, []

  def fake(q, k, v, mask=None, *, is_causal=False, implementation=None, **kw):
    calls.append((implementation, mask is None, is_causal))
    return original(q, k, v, mask=mask, is_causal=is_causal, **kw)

  cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=4,
                    num_kv_heads=2, head_dim=4)
  params = init_params(cfg, jax.random.key(0))
  tokens = jnp.arange(14).reshape(2, 7)
  forward = lambda c, mask=None: jax.jit(lambda p: Decoder(c).apply({"params": p}, tokens, attention_mask=mask)[0])(params)
  expected = forward(cfg)
  monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
  np.testing.assert_allclose(forward(cfg.replace(attention_impl="cudnn")), expected, atol=1e-5)
  assert set(calls) == {("cudnn", True, True)}
  calls.clear()
  mask = jnp.ones((2, 7), bool).at[0, :2].set(False)  # left padding: the dense mask is kept
  forward(cfg.replace(attention_impl="cudnn"), mask)
  assert set(calls) == {("cudnn", False, False)}
