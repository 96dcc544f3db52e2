"""Stage 0 by hidden-state matching (graft_jax/translator_fit.py) on a small random decoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import Decoder, init_params
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.train.model_setup import load_previous_stage
from graft_jax.translator_fit import (fit_translators, held_out_error, relative_error, run_translator_fit,
                                      teacher_pairs, text_pairs, translator_outputs)

CONFIG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=6, num_heads=4,
                     num_kv_heads=2, head_dim=8, pad_token_id=0)


@pytest.fixture(scope="module")
def target():
  return init_params(CONFIG, jax.random.key(0))


def _sequences(n, seed):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, CONFIG.vocab_size, size=int(rng.integers(5, 30))) for _ in range(n)]


def _hidden(llm, tokens, valid):
  _, _, hidden = Decoder(CONFIG, None, collect_hidden=True).apply({"params": llm}, tokens, attention_mask=valid,
                                                                  return_logits=False)
  return np.asarray(hidden)


def test_teacher_pairs_are_the_targets_hidden_states_around_each_range(target):
  plan = SurrogatePlan.create(6, [(0, 1), (2, 4)])
  sequences = _sequences(5, 0)
  pairs = teacher_pairs(target, CONFIG, plan, sequences, batch_size=4, multiple=8)
  assert len(pairs) == 2 and pairs[1]["valid"][1:].sum() == 0  # the short last batch is padded, masked out
  order = sorted(range(5), key=lambda i: len(sequences[i]))
  row = pairs[0]
  tokens = np.zeros_like(row["valid"], np.int32)
  for r, i in enumerate(order[:4]):
    tokens[r, :len(sequences[i])] = sequences[i]
  hidden = _hidden(target, tokens, row["valid"])
  embedded = np.asarray(Decoder(CONFIG).apply({"params": target}, tokens, method=Decoder.embed_tokens))
  v = row["valid"]
  np.testing.assert_allclose(row["x"][0][v], embedded[v], atol=1e-6)    # range [0, 1]: input = embeddings
  np.testing.assert_allclose(row["y"][0][v], hidden[1][v], atol=1e-5)
  np.testing.assert_allclose(row["x"][1][v], hidden[1][v], atol=1e-5)   # range [2, 4]: layer 1 -> layer 4
  np.testing.assert_allclose(row["y"][1][v], hidden[4][v], atol=1e-5)


def test_a_translator_that_replaces_only_itself_reproduces_the_target_exactly(target):
  """Range [3, 3] drops nothing: the translator is layer 3 itself, so its output on the target's
  layer-2 states must be the target's layer-3 states (RoPE positions, causal and padding masks)."""
  plan = SurrogatePlan.create(6, [(3, 3)])
  pairs = teacher_pairs(target, CONFIG, plan, _sequences(6, 1), batch_size=3, multiple=8)
  translators = {"translator_0": make_surrogate(target, plan)["segments"]["translator_0"]}
  for p in pairs:
    out = translator_outputs(translators, jnp.asarray(p["x"][0]), jnp.asarray(p["valid"]), config=CONFIG,
                             name="translator_0")
    assert float(relative_error(out, p["y"][0], p["valid"])) < 1e-9
  assert held_out_error(translators, CONFIG, pairs) < 1e-9


def test_relative_error_ignores_padding_and_is_scale_free():
  y = jnp.ones((1, 3, 4)) * jnp.array([1.0, 10.0, 100.0])[None, :, None]
  pred = y * 1.1
  valid = jnp.array([[True, True, False]])
  assert float(relative_error(pred, y, valid)) == pytest.approx(0.01, rel=1e-5)
  assert float(relative_error(pred.at[0, 2].set(0.0), y, valid)) == pytest.approx(0.01, rel=1e-5)


def test_fitting_lowers_the_held_out_error(target):
  plan = SurrogatePlan.create(6, [(1, 4)])
  pairs = teacher_pairs(target, CONFIG, plan, _sequences(32, 2), batch_size=8)
  held_out = teacher_pairs(target, CONFIG, plan, _sequences(16, 3), batch_size=8)
  init = {"translator_0": make_surrogate(target, plan)["segments"]["translator_0"]}
  state, losses = fit_translators(init, CONFIG, pairs, steps=40, lr=3e-3)
  assert int(state.step) == 40 and len(losses) == 40 and np.isfinite(losses).all()
  before, after = held_out_error(init, CONFIG, held_out), held_out_error(state.trainable, CONFIG, held_out)
  assert after < 0.8 * before


def test_the_fit_run_is_a_stage_run_that_later_stages_load_and_reruns_reuse(target, tmp_path):
  plan = SurrogatePlan.create(6, [(2, 4)])
  surrogate = make_surrogate(target, plan)
  job = {"name": "test"}
  init = {"translator_0": surrogate["segments"]["translator_0"]}
  make = text_pairs(target, CONFIG, plan, _sequences(16, 4), _sequences(8, 5), batch_size=8)
  out = run_translator_fit(str(tmp_path / "fit"), job, plan, CONFIG, init, make, steps=5, lr=1e-3)
  assert out["held_out_after"] < out["held_out_before"] and out["fit_tokens"] > 0 and out["teacher_tokens"] > 0
  loaded = load_previous_stage({"llm": surrogate}, plan, str(tmp_path / "fit"))["llm"]
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)),
                         loaded["segments"]["translator_0"], surrogate["segments"]["translator_0"])
  assert any(jax.tree.leaves(changed))
  for name in ("blocks_0", "blocks_1"):  # everything but the translator is the target's
    jax.tree.map(np.testing.assert_array_equal, loaded["segments"][name], surrogate["segments"][name])
  refuse = lambda: pytest.fail("a finished fit must not be recomputed")
  again = run_translator_fit(str(tmp_path / "fit"), job, plan, CONFIG, init, refuse, steps=5, lr=1e-3)
  assert again == out
  with pytest.raises(ValueError, match="holds translators for plan"):
    run_translator_fit(str(tmp_path / "fit"), job, SurrogatePlan.create(6, [(1, 4)]), CONFIG, init, refuse,
                       steps=5, lr=1e-3)
