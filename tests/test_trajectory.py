"""Prediction trajectory: the scores against a hand computation and transformers' hidden states."""
import jax
import numpy as np
import torch

from graft_jax.convert.load import load_model
from graft_jax.trajectory import find_transition, full_vocab_kl, layer_readout, normalized_kl
from tests.llama_helpers import tiny_hf_llama


def test_normalized_kl_by_hand():
  true_prob = np.array([[[0.1, 0.3, 0.0]], [[0.2, 0.2, 0.5]]])  # [L=2, B=1, N-1=3]
  valid = np.array([[True, True, False]])
  q0 = np.array([0.25, 0.75])
  p = np.array([0.5, 0.5])
  expected = np.sum(q0 * np.log(q0 / p))
  scores = normalized_kl(true_prob, valid)
  np.testing.assert_allclose(scores[:, 0], [expected, 0.0], rtol=1e-12)


def test_normalized_kl_clamps_zero_probabilities():
  true_prob = np.array([[[0.0, 1.0]], [[0.5, 0.5]]])
  scores = normalized_kl(true_prob, np.ones((1, 2), bool))
  q = np.array([1e-6, 1.0])
  np.testing.assert_allclose(scores[0, 0], np.sum(q * np.log(q / 0.5)))


def test_transition_found_on_a_known_curve():
  rng = np.random.default_rng(0)
  layers = 30
  mean = np.concatenate([2.0 - 0.02 * np.arange(20), 1.6 * (29 - np.arange(20, 30)) / 9])
  scores = mean[:, None] + rng.normal(0, 0.05, size=(layers, 40)) * (np.arange(layers) < 20)[:, None]
  t = find_transition(scores)
  assert t.layer in (19, 20)
  assert (t.start, t.end) == (t.layer + 1, 28)
  assert t.spread_after < t.spread_before


def test_readout_matches_transformers_logit_lens(tmp_path):
  model = tiny_hf_llama(layers=4, tied=True)
  model.save_pretrained(tmp_path)
  params, config = load_model(str(tmp_path))
  tokens = np.random.default_rng(1).integers(0, 97, size=(2, 10))
  mask = np.ones_like(tokens, bool)
  mask[1, 7:] = False  # right padding
  readout = layer_readout(params, config, tokens, mask)
  with torch.no_grad():
    out = model(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                output_hidden_states=True, use_cache=False)
    # HF's last hidden state is already normed; earlier ones get the final norm here.
    lens = [model.lm_head(model.model.norm(h)) for h in out.hidden_states[1:-1]] + [out.logits]
    logp = torch.stack([torch.log_softmax(l, -1) for l in lens]).numpy()[:, :, :-1]
  target = tokens[:, 1:]
  expected_prob = np.exp(np.take_along_axis(logp, target[None, ..., None], -1)[..., 0])
  valid = readout.valid
  np.testing.assert_allclose(readout.true_prob[:, valid], expected_prob[:, valid], atol=1e-5)
  expected_kl = np.sum(np.exp(logp[-1]) * (logp[-1] - logp), -1)
  np.testing.assert_allclose(readout.full_kl[:, valid], expected_kl[:, valid], atol=1e-4)
  assert np.all(full_vocab_kl(readout.full_kl, valid)[-1] < 1e-5)
  assert not valid[1, 6:].any() and valid[1, :6].all()
