"""The penalty on the image embeddings' statistics (train/embedding_penalty.py) against the
fidelity measures' own numpy statistics, and inside the train step."""
import jax
import numpy as np
import pytest

from graft_jax.fidelity_measures import image_embedding_stats
from graft_jax.train.batch import expand_batch
from graft_jax.train.embedding_penalty import embedding_stat_terms
from graft_jax.train.loss import LossOptions, global_token_mean
from tests.train_setup import compiled, make_batch, run_steps, setup


def test_terms_match_the_reported_statistics_of_the_rows_with_an_image():
  rng = np.random.default_rng(0)
  tokens = rng.normal(size=(50, 16)).astype(np.float32) * 0.1 + 0.05
  emb = rng.normal(size=(3, 5, 16)).astype(np.float32) * 4.0
  has_image = np.array([True, False, True])
  terms = embedding_stat_terms(emb, has_image, tokens)
  stats = image_embedding_stats(emb[has_image].reshape(-1, 16), tokens)  # an independent float64 oracle
  np.testing.assert_allclose(terms["norm"], np.log(stats["image_rms"] / stats["token_rms"]) ** 2, rtol=1e-4)
  np.testing.assert_allclose(terms["direction"], 1 - stats["mean_direction_cos"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(terms["nearest"], 1 - stats["nearest_cos"], rtol=1e-4)
  np.testing.assert_allclose(terms["penalty"], terms["norm"] + terms["direction"] + terms["nearest"], rtol=1e-6)
  assert terms["norm"] > 1.0  # 4 / 0.1-ish: far from the tokens' scale


def test_embeddings_that_are_token_embeddings_cost_nothing_and_no_image_costs_nothing():
  rng = np.random.default_rng(1)
  tokens = rng.normal(size=(40, 8)).astype(np.float32)
  emb = np.tile(tokens[None], (2, 1, 1))  # every token once per row: the tokens' own statistics
  terms = embedding_stat_terms(emb, np.array([True, True]), tokens)
  for key in ("norm", "direction", "nearest"):
    assert abs(float(terms[key])) < 1e-5, key
  none = embedding_stat_terms(emb * 9.0, np.array([False, False]), tokens)
  assert all(float(v) == 0.0 for v in none.values())


def test_gradient_pulls_large_embeddings_toward_the_token_scale():
  tokens = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
  emb = np.random.default_rng(3).normal(size=(1, 4, 8)).astype(np.float32) * 20.0
  grad = jax.grad(lambda e: embedding_stat_terms(e, np.array([True]), tokens)["norm"])(emb)
  assert float(np.sum(np.asarray(grad) * emb)) > 0  # descending it shrinks the embeddings


def test_the_step_adds_the_weighted_penalty_of_the_clean_embeddings():
  batch = make_batch(5)
  (plain,), plain_params = run_steps([batch])
  (pen,), pen_params = run_steps([batch], embed_penalty=0.5)
  model, _, params, _ = setup()
  expanded = expand_batch(batch, model.image_len)
  emb = model.apply({"params": params}, expanded["images"], method="image_embeddings")[:, 1:-1]
  p = embedding_stat_terms(emb, expanded["image_pos"] >= 0, params["llm"]["embed"]["embedding"])["penalty"]
  logits = model.apply({"params": params}, expanded["tokens"], expanded["images"], expanded["image_pos"])[0]
  _, ref = global_token_mean(logits, expanded, LossOptions())
  np.testing.assert_allclose(pen["embed_penalty"], p, rtol=1e-5)
  np.testing.assert_allclose(pen["loss"], ref["loss"] + 0.5 * p, rtol=1e-5)
  np.testing.assert_allclose(pen["ce"], plain["ce"], rtol=1e-6)
  assert "embed_penalty" not in plain
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
           for a, b in zip(jax.tree.leaves(pen_params["proj"]), jax.tree.leaves(plain_params["proj"]))]
  assert max(moved) > 1e-6  # the penalty's gradient reaches the adapter


def test_micro_batches_add_the_mean_of_their_penalties_at_the_same_weight():
  """With k micro-batches the loss is CE + weight x the mean of the micro-batches' P (P is a
  statistic of each micro-batch, so it differs from the whole batch's)."""
  batch = make_batch(6)
  for k in (1, 2):
    (m,), _ = run_steps([batch], embed_penalty=0.5, k=k)
    assert m["embed_penalty"] > 0
    np.testing.assert_allclose(m["loss"] - m["ce"], 0.5 * m["embed_penalty"], rtol=1e-4, err_msg=f"k={k}")


def test_bad_penalty_weights_raise():
  with pytest.raises(ValueError, match="embed_penalty"):
    compiled(embed_penalty=-1.0)
  with pytest.raises(ValueError, match="embed_penalty"):
    compiled(spec=(r"llm/segments/translator_\d+/.*",), decoder_only=True, embed_penalty=0.5)
