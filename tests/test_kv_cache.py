"""KV-cache decoding gives the full forward's logits, step by step, also with left padding."""
import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.data.padding import left_pad
from graft_jax.evaluate.generation import generate
from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import Decoder, init_cache, init_params

CONFIG = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                     num_kv_heads=2, head_dim=8, rope_theta=10000.0)
SEGMENTS = (("blocks_0", 2), ("translator_0", 1))


def test_incremental_decoding_matches_full_forward():
  params = init_params(CONFIG, jax.random.key(0), SEGMENTS)
  model = Decoder(CONFIG, SEGMENTS)
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 61, size=(2, 12)))
  full, _, _ = model.apply({"params": params}, tokens)
  cache = init_cache(CONFIG, SEGMENTS, batch=2, max_len=12)
  step_logits, cache, _ = model.apply({"params": params}, tokens[:, :5], cache=cache, cache_index=0)
  np.testing.assert_allclose(step_logits, full[:, :5], atol=1e-5)
  for i in range(5, 12):
    step_logits, cache, _ = model.apply({"params": params}, tokens[:, i:i + 1], cache=cache,
                                        cache_index=i)
    np.testing.assert_allclose(step_logits[:, 0], full[:, i], atol=1e-5)


def test_left_padding_does_not_change_real_tokens():
  params = init_params(CONFIG, jax.random.key(1))
  model = Decoder(CONFIG)
  short = [5, 6, 7, 8]
  ids, mask = left_pad([short, list(range(10, 19))], pad_id=0)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  padded, _, _ = model.apply({"params": params}, jnp.asarray(ids), positions=jnp.asarray(positions),
                             attention_mask=jnp.asarray(mask))
  alone, _, _ = model.apply({"params": params}, jnp.asarray([short]))
  np.testing.assert_allclose(padded[0, -4:], alone[0], atol=1e-5)


def test_greedy_generation_equals_argmax_of_full_forward():
  params = init_params(CONFIG, jax.random.key(2))
  model = Decoder(CONFIG)
  prompts = [[3, 4, 5], [7, 8, 9, 10, 11]]
  outs = generate(params, CONFIG, prompts, max_new_tokens=6, eos_ids=(60,), pad_id=0)
  for prompt, out in zip(prompts, outs):
    seq = list(prompt)
    for _ in range(len(out)):
      logits, _, _ = model.apply({"params": params}, jnp.asarray([seq]))
      seq.append(int(jnp.argmax(logits[0, -1])))
    assert seq[len(prompt):] == out


def test_sampling_is_seeded_and_top_p_limits_choices():
  params = init_params(CONFIG, jax.random.key(3))
  prompts = [[1, 2, 3]] * 4
  a = generate(params, CONFIG, prompts, max_new_tokens=5, eos_ids=(), temperature=1.0, seed=7)
  b = generate(params, CONFIG, prompts, max_new_tokens=5, eos_ids=(), temperature=1.0, seed=7)
  assert a == b
  tiny_p = generate(params, CONFIG, prompts, max_new_tokens=5, eos_ids=(), temperature=1.0,
                    top_p=1e-6, seed=7)
  greedy = generate(params, CONFIG, prompts, max_new_tokens=5, eos_ids=())
  assert tiny_p == greedy  # top-p that keeps one token is greedy


def test_generation_stops_at_end_token():
  params = init_params(CONFIG, jax.random.key(4))
  first = generate(params, CONFIG, [[1, 2]], max_new_tokens=3, eos_ids=())[0]
  stopped = generate(params, CONFIG, [[1, 2]], max_new_tokens=3, eos_ids=(first[0],))[0]
  assert stopped == [first[0]]
