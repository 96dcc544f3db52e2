"""Our decoder vs transformers' LlamaForCausalLM on tiny random configs, through the converters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.convert.load import load_model
from graft_jax.models.llama import Decoder
from tests.llama_helpers import LLAMA3_ROPE, hf_logits, tiny_hf_llama

CASES = {
    "untied_gqa": dict(tied=False, heads=4, kv_heads=2),
    "tied_gqa": dict(tied=True, heads=4, kv_heads=2),
    "untied_mha": dict(tied=False, heads=4, kv_heads=4),
    "multi_query": dict(tied=False, heads=4, kv_heads=1),
    "llama3_rope": dict(tied=True, heads=4, kv_heads=2, rope=LLAMA3_ROPE),
}


def _our_logits(params, config, tokens):
  logits, _, _ = Decoder(config).apply({"params": params}, jnp.asarray(tokens))
  return np.asarray(logits)


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
  model = tiny_hf_llama(**CASES[case])
  model.save_pretrained(tmp_path)
  params, config = load_model(str(tmp_path))
  assert config.tie_word_embeddings == CASES[case]["tied"]
  assert ("head" in params) != CASES[case]["tied"]
  # long enough (40 > original_max_position_embeddings=16) that llama3 scaling matters
  tokens = np.random.default_rng(0).integers(0, 97, size=(2, 40))
  diff = np.abs(_our_logits(params, config, tokens) - hf_logits(model, tokens)).max()
  assert diff <= 1e-4, diff


def test_llama3_rope_scaling_is_applied(tmp_path):
  """Guards the test above: with scaling removed the logits must differ."""
  model = tiny_hf_llama(tied=True, rope=LLAMA3_ROPE)
  model.save_pretrained(tmp_path)
  params, config = load_model(str(tmp_path))
  tokens = np.random.default_rng(0).integers(0, 97, size=(1, 40))
  unscaled = _our_logits(params, config.replace(rope_scaling=None), tokens)
  assert np.abs(unscaled - hf_logits(model, tokens)).max() > 1e-3


def test_sharded_safetensors_with_index(tmp_path):
  model = tiny_hf_llama(tied=False)
  model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  assert len(list(tmp_path.glob("*.safetensors"))) > 2
  params, config = load_model(str(tmp_path))
  tokens = np.arange(24).reshape(2, 12)
  assert np.abs(_our_logits(params, config, tokens) - hf_logits(model, tokens)).max() <= 1e-4


def test_bf16_compute_stays_close(tmp_path):
  model = tiny_hf_llama()
  model.save_pretrained(tmp_path)
  params, config = load_model(str(tmp_path), param_dtype="bfloat16", dtype="bfloat16")
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  tokens = np.arange(16).reshape(1, 16)
  ours = _our_logits(params, config, tokens).astype(np.float32)
  assert np.abs(ours - hf_logits(model, tokens)).max() < 0.1


def test_remat_policies_give_same_gradients(tmp_path):
  model = tiny_hf_llama()
  model.save_pretrained(tmp_path)
  params, config = load_model(str(tmp_path))
  tokens = jnp.arange(16).reshape(2, 8)

  def grads(policy):
    cfg = config.replace(remat_policy=policy)
    loss = lambda p: Decoder(cfg).apply({"params": p}, tokens)[0].astype(jnp.float32).var()
    return jax.grad(loss)(params)

  base = grads("none")
  for policy in ("full", "dots", "dots_no_batch"):
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(grads(policy))):
      np.testing.assert_allclose(a, b, atol=1e-6)
