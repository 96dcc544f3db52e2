"""Mesh, parameter rules, and the sharded step == the single-device step on 8 simulated devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from graft_jax.train import sharding
from graft_jax.train.paths import leaves_with_paths
from tests.train_setup import ADAMW, ONE, compiled, make_batch, run_steps, setup

DATA_FSDP = (("data", 4), ("fsdp", 2), ("tensor", 1))
WITH_TENSOR = (("data", 2), ("fsdp", 2), ("tensor", 2))


@pytest.mark.parametrize("axes", [DATA_FSDP, WITH_TENSOR], ids=["data4xfsdp2", "2x2x2"])
def test_sharded_step_equals_one_device(axes):
  batch = make_batch(0)
  (ref,), ref_params = run_steps([batch], axes=ONE)
  (got,), got_params = run_steps([batch], axes=axes)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, err_msg=key)
  moved = 0
  initial = dict(leaves_with_paths(setup()[2]))
  for (path, a), (_, b) in zip(leaves_with_paths(got_params), leaves_with_paths(ref_params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5, err_msg=path)
    moved += not np.array_equal(b, initial[path])
  assert moved > 10  # the comparison is not between two untouched trees


def test_state_is_sharded_as_the_rules_say():
  layout, _ = compiled(axes=WITH_TENSOR, optimizer=ADAMW)  # jit only: nothing compiles here
  seg = layout.state.trainable["llm"]["segments"]["translator_0"]
  assert seg["attn"]["q_proj"]["kernel"].spec == P(None, "fsdp", "tensor")
  assert seg["mlp"]["down_proj"]["kernel"].spec == P(None, "tensor", "fsdp")
  assert layout.state.trainable["proj"]["soi"].spec == P()
  moments = [s.spec for p, s in leaves_with_paths(layout.state.opt_state)
             if p.endswith("translator_0/attn/q_proj/kernel")]
  assert moments == [P(None, "fsdp", "tensor")] * 2  # Adam's mu and nu follow the param
  counters = [s.spec for p, s in leaves_with_paths(layout.state.opt_state) if not any(map(str.isalpha, p))]
  assert counters and set(counters) == {P()} and layout.state.step.spec == P()
  assert layout.batch.spec == P(("data", "fsdp"))
  assert layout.frozen["llm"]["embed"]["embedding"].spec == P(("tensor", "fsdp"), None)


def test_default_rules_cover_the_target_tree_and_keep_layers_unsharded():
  mesh = sharding.make_mesh(WITH_TENSOR)
  specs = dict(leaves_with_paths(sharding.param_specs(setup()[3], sharding.DEFAULT_PARAM_RULES, mesh)))
  for path, spec in specs.items():
    if path.startswith(("img/blocks/", "llm/segments/")):
      assert len(spec) == 0 or spec[0] is None, path
  assert specs["img/pos_embed"] == P(None, "fsdp")  # [5, 24]: the larger dim


def test_an_unmatched_parameter_is_an_error_naming_it():
  mesh = sharding.make_mesh(ONE, jax.devices()[:1])
  tree = {**setup()[2], "img": {**setup()[2]["img"], "mystery": jnp.zeros((3, 4))}}
  with pytest.raises(ValueError, match="img/mystery"):
    sharding.param_specs(tree, sharding.DEFAULT_PARAM_RULES, mesh)


def test_explicit_specs_are_checked():
  mesh = sharding.make_mesh(WITH_TENSOR)
  rules = [("w", ("fsdp", "tensor")), ("v", ("tensor",))]
  with pytest.raises(ValueError, match="dim 3 is not divisible"):
    sharding.param_spec("w", (4, 3), rules, mesh)
  with pytest.raises(ValueError, match="gives 1 dims"):
    sharding.param_spec("v", (4, 4), rules, mesh)
  assert sharding.param_spec("w", (4, 6), rules, mesh) == P("fsdp", "tensor")
  # axes the mesh lacks are dropped; FSDP picks the largest divisible dim, or replicates
  data_only = sharding.make_mesh((("data", 2),), jax.devices()[:2])
  assert sharding.param_spec("w", (4, 3), rules, data_only) == P(None, None)
  fsdp = sharding.make_mesh((("fsdp", 4),), jax.devices()[:4])
  assert sharding.param_spec("x", (6, 8, 7), [("x", sharding.FSDP)], fsdp) == P(None, "fsdp", None)
  assert sharding.param_spec("x", (3, 5), [("x", sharding.FSDP)], fsdp) == P()


def test_make_mesh_fills_the_remaining_devices_and_checks_sizes():
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 2), ("tensor", 1)))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  with pytest.raises(ValueError):
    sharding.make_mesh((("data", 3), ("fsdp", 2)))
  with pytest.raises(ValueError):
    sharding.make_mesh((("data", -1), ("fsdp", -1)))
  with pytest.raises(ValueError):
    sharding.make_mesh((("data", -1), ("fsdp", 3)))
