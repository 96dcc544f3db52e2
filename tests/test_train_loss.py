"""The global token mean, KL distillation, dynamic loss weights, and the image-slot expansion."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.data import batching
from graft_jax.data.templates import EncodedSample, expand_image_slot
from graft_jax.train.batch import expand_batch, split_microbatches
from graft_jax.train.loss import (LossOptions, batch_weights, dynamic_loss_weights, gather_positions,
                                  global_token_mean, kl_weights, loss_sums, selected_loss_sums, supervised_positions,
                                  targets_and_mask, token_kl)
from graft_jax.train.step import supervised_cap


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _text_batch(tokens, loss_mask):
  tokens = np.asarray(tokens, np.int32)
  return {"tokens": tokens, "loss_mask": np.asarray(loss_mask, bool), "valid": np.ones(tokens.shape, bool),
          "image_pos": np.full(len(tokens), -1, np.int32)}


def test_loss_is_the_global_token_mean_not_a_mean_of_sample_means():
  # Row 0 has 1 supervised target, row 1 has 3; the per-sample means differ.
  logits = np.zeros((2, 4, 3), np.float32)
  logits[0, 0] = [0.0, 0.0, 0.0]          # predicts tokens[0, 1] = 0: CE = log 3
  logits[1, 0] = [2.0, 0.0, 0.0]          # predicts tokens[1, 1] = 0
  logits[1, 1] = [0.0, 1.0, 0.0]          # predicts tokens[1, 2] = 2
  logits[1, 2] = [0.0, 0.0, 3.0]          # predicts tokens[1, 3] = 2
  batch = _text_batch([[1, 0, 1, 1], [1, 0, 2, 2]], [[0, 1, 0, 0], [0, 1, 1, 1]])
  ce = [math.log(3), math.log(math.e ** 2 + 2) - 2, math.log(math.e + 2), math.log(math.e ** 3 + 2) - 3]
  loss, metrics = global_token_mean(jnp.asarray(logits), batch)
  assert float(loss) == pytest.approx(sum(ce) / 4, rel=1e-6)
  assert float(loss) != pytest.approx((ce[0] + sum(ce[1:]) / 3) / 2, rel=1e-3)
  assert float(metrics["tokens/supervised"]) == 4
  assert float(metrics["tokens/text"]) == 8 and float(metrics["tokens/image"]) == 0


def test_padding_and_unsupervised_positions_do_not_count():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
  batch = _text_batch(rng.integers(0, 7, (2, 5)), [[0, 1, 1, 0, 1], [0, 0, 1, 1, 1]])
  batch["valid"][1, 3:] = False  # padding: its loss_mask entries must be ignored
  loss, metrics = global_token_mean(logits, batch)
  lp = _log_softmax(logits)
  terms = [-lp[b, t - 1, batch["tokens"][b, t]] for b, t in [(0, 1), (0, 2), (0, 4), (1, 2)]]
  assert float(loss) == pytest.approx(np.mean(terms), rel=1e-6)
  assert float(metrics["tokens/supervised"]) == 4


def test_kl_to_the_teacher_at_supervised_positions():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
  batch = _text_batch(rng.integers(0, 5, (2, 4)), [[0, 1, 0, 1], [0, 0, 0, 1]])
  options = LossOptions(ce_weight=1.0, kl_weight=0.5)
  loss, metrics = global_token_mean(logits, batch, options, teacher_logits=teacher)
  p, q = _log_softmax(teacher), _log_softmax(logits)
  kl = [(np.exp(p[b, t]) * (p[b, t] - q[b, t])).sum() for b, t in [(0, 0), (0, 2), (1, 2)]]
  assert float(metrics["kl"]) == pytest.approx(np.mean(kl), rel=1e-5)
  assert float(loss) == pytest.approx(float(metrics["ce"]) + 0.5 * np.mean(kl), rel=1e-6)
  np.testing.assert_allclose(token_kl(logits, logits), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="teacher"):
    global_token_mean(logits, batch, options)


def test_kl_on_text_rows_only_leaves_image_samples_to_cross_entropy():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
  batch = _text_batch(rng.integers(0, 5, (2, 4)), [[0, 1, 0, 1], [0, 1, 1, 1]])
  batch["image_pos"] = np.array([-1, 0], np.int32)  # row 1 is an image sample
  options = LossOptions(kl_weight=0.5, kl_rows="text")
  loss, metrics = global_token_mean(logits, batch, options, teacher_logits=teacher)
  p, q = _log_softmax(teacher), _log_softmax(logits)
  kl_row0 = sum((np.exp(p[0, t]) * (p[0, t] - q[0, t])).sum() for t in (0, 2))
  assert float(metrics["kl"]) == pytest.approx(kl_row0 / 5, rel=1e-5)  # over all 5 targets
  assert float(loss) == pytest.approx(float(metrics["ce"]) + 0.5 * kl_row0 / 5, rel=1e-6)
  _, every_row = global_token_mean(logits, batch, LossOptions(kl_weight=0.5), teacher_logits=teacher)
  assert float(every_row["kl"]) > float(metrics["kl"])
  with pytest.raises(ValueError, match="kl_rows"):
    LossOptions(kl_weight=1.0, kl_rows="images")


def test_dynamic_weights_on_a_hand_example():
  eot = 2
  targets = np.array([[5, 6, 2, 7, 2, 9],    # image: segments [5 6 2] n=3, [7 2] n=2, [9] unsupervised
                      [3, 2, 4, 4, 4, 2],    # image: [3 2] n=2, [4 4 4 2] n=4 -> the largest r
                      [1, 2, 3, 3, 0, 0],    # text-only: weight 1
                      [2, 8, 8, 0, 0, 0]])   # image: an unsupervised end of turn still cuts: [8 8] n=2
  supervised = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]], bool)
  image_rows = np.array([True, True, False, True])
  w = np.asarray(dynamic_loss_weights(jnp.asarray(targets), jnp.asarray(supervised), jnp.asarray(image_rows), (eot,)))
  big = math.log(5)
  expected = np.array([[big / math.log(4)] * 3 + [big / math.log(3)] * 2 + [0],
                       [big / math.log(3)] * 2 + [1.0] * 4,
                       [1, 1, 1, 1, 0, 0],
                       [0, big / math.log(3), big / math.log(3), 0, 0, 0]])
  np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_dynamic_weights_enter_the_numerator_only():
  logits = jnp.zeros((1, 5, 4))  # CE = log 4 for every target
  batch = {**_text_batch([[0, 1, 2, 3, 2]], [[0, 1, 1, 1, 1]]), "image_pos": np.array([0], np.int32)}
  options = LossOptions(dynamic_weights=True, end_of_turn_ids=(2,))
  loss, metrics = global_token_mean(logits, batch, options)  # segments [1 2], [3 2]: equal, weight 1
  assert float(loss) == pytest.approx(math.log(4), rel=1e-6)
  batch["tokens"] = np.array([[0, 2, 1, 3, 2]], np.int32)  # segments [2] n=1 and [1 3 2] n=3
  loss, metrics = global_token_mean(logits, batch, options)
  w = [math.log(4) / math.log(2)] + [1.0] * 3
  assert float(loss) == pytest.approx(sum(w) * math.log(4) / 4, rel=1e-6)
  assert float(metrics["ce"]) == pytest.approx(math.log(4), rel=1e-6)


def test_loss_options_are_validated():
  with pytest.raises(ValueError, match="end_of_turn_ids"):
    LossOptions(dynamic_weights=True)
  with pytest.raises(ValueError):
    LossOptions(ce_weight=0.0, kl_weight=0.0)


def test_expand_batch_matches_expand_image_slot_row_by_row():
  rng = np.random.default_rng(3)
  image_len, pad = 4, 0
  samples = []
  for n, pos in [(7, 2), (5, -1), (9, 0), (6, 6), (3, -1)]:
    samples.append(EncodedSample(rng.integers(1, 50, n).astype(np.int32), rng.random(n) < 0.5, pos))
  examples = [{"tokens": s.ids, "loss_mask": s.loss_mask, "image_pos": s.image_pos,
               "image": np.zeros((2, 2, 3), np.float32) if s.has_image else None, "record_index": i}
              for i, s in enumerate(samples)]
  batch = batching.collate(examples, batch_size=6, buckets=(10,), image_size=2, pad_id=pad)
  out = jax.jit(lambda b: expand_batch(b, image_len, pad))(batch)
  assert out["tokens"].shape == (6, 10 + image_len)
  for row, s in enumerate(samples):
    ids, mask, image_mask = expand_image_slot(s, image_len, pad)
    n = len(ids)
    np.testing.assert_array_equal(out["tokens"][row, :n], ids)
    np.testing.assert_array_equal(out["loss_mask"][row, :n], mask)
    np.testing.assert_array_equal(out["image_mask"][row, :n], image_mask)
    assert out["valid"][row, :n].all() and not out["valid"][row, n:].any()
    assert (np.asarray(out["tokens"][row, n:]) == pad).all() and not out["loss_mask"][row, n:].any()
  assert not np.asarray(out["valid"][5]).any()  # the padding row stays empty


def test_microbatches_stride_over_rows():
  batch = {"x": jnp.arange(12).reshape(6, 2)}
  micro = split_microbatches(batch, 3)
  assert micro["x"].shape == (3, 2, 2)
  np.testing.assert_array_equal(micro["x"][1], [[2, 3], [8, 9]])
  with pytest.raises(ValueError, match="multiple of num_microbatches"):
    split_microbatches(batch, 4)


def test_supervised_positions_gather_each_rows_targets_in_order():
  supervised = np.array([[False, True, False, True, True], [False] * 5, [True] * 5])
  pos, keep = supervised_positions(jnp.asarray(supervised), cap=5)
  np.testing.assert_array_equal(np.asarray(keep), supervised[:, :5].sum(1, keepdims=True) > np.arange(5))
  np.testing.assert_array_equal(np.asarray(pos)[0, :3], [1, 3, 4])
  np.testing.assert_array_equal(np.asarray(pos)[2], np.arange(5))
  x = jnp.arange(15).reshape(3, 5)
  np.testing.assert_array_equal(np.asarray(gather_positions(x, pos))[0, :3], [1, 3, 4])


def test_supervised_cap_rounds_the_largest_row_up_and_stays_within_the_row():
  mask = np.zeros((2, 40), bool)
  mask[0, 5:12] = True   # targets 5..11: 7 in row 0
  mask[1, 1:20] = True   # 19 in row 1
  batch = {"tokens": np.zeros((2, 40), np.int32), "loss_mask": mask, "valid": np.ones((2, 40), bool)}
  assert supervised_cap(batch) == 32
  assert supervised_cap(batch, multiple=8) == 24
  batch["tokens"] = np.zeros((2, 21), np.int32)
  batch["loss_mask"], batch["valid"] = mask[:, :21], batch["valid"][:, :21]
  assert supervised_cap(batch) == 20  # never more than T - 1
  batch["loss_mask"] = np.zeros((2, 21), bool)
  assert supervised_cap(batch) == 1


@pytest.mark.parametrize("kl_rows", ["all", "text"])
def test_loss_at_selected_positions_equals_the_full_sequence_loss(kl_rows):
  rng = np.random.default_rng(0)
  logits, teacher = (rng.normal(size=(3, 9, 11)).astype(np.float32) for _ in range(2))
  tokens = rng.integers(0, 11, size=(3, 9))
  mask = rng.random((3, 9)) < 0.4
  batch = _text_batch(tokens, mask)
  batch["image_pos"][1] = 2
  options = LossOptions(kl_weight=0.3, kl_rows=kl_rows)
  full = loss_sums(jnp.asarray(logits), batch, batch_weights(batch, options), options, jnp.asarray(teacher))
  targets, supervised = targets_and_mask(batch)
  pos, keep = supervised_positions(jnp.asarray(supervised), cap=8)
  take = lambda x: gather_positions(jnp.asarray(x)[:, :-1], pos)
  picked = selected_loss_sums(take(logits), gather_positions(jnp.asarray(targets), pos), keep,
                              gather_positions(batch_weights(batch, options), pos), options, take(teacher),
                              gather_positions(kl_weights(batch_weights(batch, options), batch, options), pos))
  for key in ("objective", "ce_sum", "kl_sum"):
    np.testing.assert_allclose(picked[key], full[key], rtol=1e-6, err_msg=key)
