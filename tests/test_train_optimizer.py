"""Schedule (warmup then cosine to 0), AdamW + clipping, the encoder learning-rate multiplier."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.train.optimizer import make_optimizer, make_schedule
from graft_jax.train.state import TrainState


def test_schedule_warms_up_linearly_then_cosines_to_zero():
  s = make_schedule(2.0, total_steps=100, warmup_ratio=0.1)
  expected = {0: 0.0, 5: 1.0, 10: 2.0, 55: 1.0, 100: 0.0, 150: 0.0,
              32: 2.0 * 0.5 * (1 + math.cos(math.pi * 22 / 90))}
  for step, value in expected.items():
    assert float(s(step)) == pytest.approx(value, abs=1e-6), step
  assert float(s(11)) < 2.0
  no_warmup = make_schedule(1.0, total_steps=4, warmup_ratio=0.0)
  np.testing.assert_allclose([float(no_warmup(i)) for i in range(5)],
                             [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0],
                             atol=1e-6)


def test_schedule_rejects_bad_arguments():
  with pytest.raises(ValueError):
    make_schedule(1.0, 0)
  with pytest.raises(ValueError):
    make_schedule(1.0, 10, warmup_ratio=1.0)


def _updates(tx, params, grads_seq):
  state = tx.init(params)
  out = []
  for g in grads_seq:
    u, state = tx.update(g, state, params)
    out.append(u)
    params = jax.tree.map(jnp.add, params, u)
  return out, params


def test_encoder_lr_multiplier_scales_only_img():
  params = {"img": {"w": jnp.ones(3)}, "proj": {"w": jnp.ones(3)}}
  grads = {"img": {"w": jnp.array([0.1, -0.2, 0.3])}, "proj": {"w": jnp.array([0.1, -0.2, 0.3])}}
  (u,), _ = _updates(make_optimizer(0.1, encoder_lr_mult=0.25), params, [grads])
  np.testing.assert_allclose(u["img"]["w"], 0.25 * u["proj"]["w"], rtol=1e-6)
  np.testing.assert_allclose(u["proj"]["w"], -0.1 * np.sign(grads["proj"]["w"]), rtol=1e-4)


def test_gradients_are_clipped_to_global_norm_one_before_adam():
  # With clipping, grads 100 then 1 both reach Adam as norm 1: the second update is -lr.
  params = {"proj": {"w": jnp.zeros(1)}}
  seq = [{"proj": {"w": jnp.array([100.0])}}, {"proj": {"w": jnp.array([1.0])}}]
  (_, u2), _ = _updates(make_optimizer(0.1), params, seq)
  np.testing.assert_allclose(u2["proj"]["w"], [-0.1], rtol=1e-4)
  (_, u2), _ = _updates(make_optimizer(0.1, clip_norm=1e6), params, seq)
  assert abs(float(u2["proj"]["w"][0]) + 0.1) > 1e-2


def test_weight_decay_is_off_by_default_and_decoupled_when_on():
  params = {"proj": {"w": jnp.full(2, 2.0)}}
  zero = {"proj": {"w": jnp.zeros(2)}}
  _, after = _updates(make_optimizer(0.1), params, [zero])
  np.testing.assert_array_equal(after["proj"]["w"], params["proj"]["w"])
  _, after = _updates(make_optimizer(0.1, weight_decay=0.5), params, [zero])
  np.testing.assert_allclose(after["proj"]["w"], 2.0 * (1 - 0.1 * 0.5), rtol=1e-6)


def test_optimizer_state_exists_only_for_the_trainable_tree():
  trainable = {"proj": {"w": jnp.ones((2, 3))}, "img": {"post_ln": {"scale": jnp.ones(3)}}}
  state = TrainState.create(trainable, make_optimizer(0.1, encoder_lr_mult=0.5))
  sizes = sorted(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
  assert sizes == [3, 3, 6, 6]  # Adam's mu and nu for the two trainable leaves, nothing else
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
