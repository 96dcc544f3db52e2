"""Adapter: shapes, soi/eoi placement, the MLP's arithmetic, init scale."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.models.projector import Projector


def _gelu_erf(x: np.ndarray) -> np.ndarray:
  return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_output_shape_placement_and_arithmetic():
  x = jax.random.normal(jax.random.key(1), (3, 5, 16))
  proj = Projector(dim=24)
  params = proj.init(jax.random.key(0), x)["params"]
  assert set(params) == {"fc1", "fc2", "soi", "eoi"}
  assert params["fc1"]["kernel"].shape == (16, 24) and params["fc2"]["kernel"].shape == (24, 24)
  out = np.asarray(proj.apply({"params": params}, x))
  assert out.shape == (3, 7, 24)
  for b in range(3):
    np.testing.assert_array_equal(out[b, 0], params["soi"])
    np.testing.assert_array_equal(out[b, -1], params["eoi"])
  p = jax.tree.map(np.asarray, params)
  h = _gelu_erf(np.asarray(x) @ p["fc1"]["kernel"] + p["fc1"]["bias"])
  np.testing.assert_allclose(out[:, 1:-1], h @ p["fc2"]["kernel"] + p["fc2"]["bias"], atol=1e-5, rtol=1e-5)


def test_depth_sets_layer_count():
  params = Projector(dim=8, depth=3).init(jax.random.key(0), jnp.zeros((1, 2, 4)))["params"]
  assert set(params) == {"fc1", "fc2", "fc3", "soi", "eoi"}
  assert params["fc1"]["kernel"].shape == (4, 8) and params["fc3"]["kernel"].shape == (8, 8)
  with pytest.raises(ValueError, match="depth"):
    Projector(dim=8, depth=0).init(jax.random.key(0), jnp.zeros((1, 2, 4)))


def test_soi_eoi_init_std_is_one_over_sqrt_d():
  d = 1024
  params = Projector(dim=d).init(jax.random.key(0), jnp.zeros((1, 1, 8)))["params"]
  assert params["soi"].shape == params["eoi"].shape == (d,)
  both = np.concatenate([params["soi"], params["eoi"]])
  assert abs(both.std() / d ** -0.5 - 1.0) < 0.1
  assert abs(both.mean()) < 3 * d ** -0.5 / math.sqrt(both.size)
  assert not np.array_equal(params["soi"], params["eoi"])
