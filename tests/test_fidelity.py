"""Surrogate fidelity: KL(target || surrogate) is 0 for the identity plan and grows with the cut."""
import jax
import numpy as np

from graft_jax.fidelity import next_token_kl
from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import init_params
from graft_jax.surrogate import SurrogatePlan, identity_plan, make_surrogate

CONFIG = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=6, num_heads=4,
                     num_kv_heads=2, head_dim=8)


def test_kl_is_zero_for_identity_and_positive_for_a_cut():
  params = init_params(CONFIG, jax.random.key(0))
  tokens = np.random.default_rng(0).integers(0, 50, size=(3, 16)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  mask[2, 10:] = False
  same = identity_plan(6)
  assert np.abs(next_token_kl(params, make_surrogate(params, same), CONFIG, same.segments, tokens, mask)).max() < 1e-6
  small_cut, big_cut = SurrogatePlan.create(6, [(3, 4)]), SurrogatePlan.create(6, [(1, 4)])
  kl_small = next_token_kl(params, make_surrogate(params, small_cut), CONFIG, small_cut.segments, tokens, mask)
  kl_big = next_token_kl(params, make_surrogate(params, big_cut), CONFIG, big_cut.segments, tokens, mask)
  assert np.all(kl_small > 0) and kl_big.mean() > kl_small.mean()
