"""Surrogate plans, slicing, and the oracle: transformers' Llama with the dropped layers deleted."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from graft_jax.convert.load import load_model
from graft_jax.models.llama import Decoder
from graft_jax.surrogate import PlanError, SurrogatePlan, graft, identity_plan, make_surrogate
from tests.llama_helpers import hf_logits, tiny_hf_llama


def test_reference_plans_describe_like_the_reference():
  assert SurrogatePlan.create(28, [(16, 26)]).describe() == "keep 0-15, translator 16, drop 17-26, keep 27"
  assert SurrogatePlan.create(32, [(17, 30)]).num_kept_layers == 19
  assert SurrogatePlan.create(80, [(40, 78)]).num_kept_layers == 42
  plan = SurrogatePlan.create(12, [(2, 4), (6, 9, 2)])
  assert plan.describe() == "keep 0-1, translator 2, drop 3-4, keep 5, translator 6-7, drop 8-9, keep 10-11"
  assert plan.segments == (("blocks_0", 2), ("translator_0", 1), ("blocks_1", 1), ("translator_1", 2),
                           ("blocks_2", 2))
  assert plan.translator_segments == ("translator_0", "translator_1")
  assert SurrogatePlan.from_dict(plan.to_dict()) == plan


def test_num_translators_takes_consecutive_layers():
  """The reference picks a, a+2, a+4 for k >= 2; the intended layers are a..a+k-1."""
  plan = SurrogatePlan.create(10, [(3, 7, 3)])
  assert [layers for _, kind, layers in plan.layout() if kind == "translator"] == [[3, 4, 5]]
  assert plan.describe() == "keep 0-2, translator 3-5, drop 6-7, keep 8-9"


def test_range_at_the_start_and_nothing_dropped():
  plan = SurrogatePlan.create(6, [(0, 2)])
  assert plan.segments == (("translator_0", 1), ("blocks_0", 3))
  assert SurrogatePlan.create(6, [(4, 4)]).describe() == "keep 0-3, translator 4, keep 5"


@pytest.mark.parametrize("ranges, message", [
    ([(20, 29)], "outside"),                 # reaches the last layer
    ([(-1, 3)], "outside"),
    ([(5, 3)], "not consecutive"),
    ([{"layers": [3, 4, 6]}], "not consecutive"),
    ([(2, 6), (5, 8)], "overlap"),
    ([(2, 6), (6, 8)], "overlap"),
    ([(2, 4, 4)], "num_translators=4"),
    ([(2, 4, 0)], "num_translators=0"),
    ([(1, 2, 3, 4)], "start, end"),
])
def test_bad_plans_are_refused(ranges, message):
  with pytest.raises(PlanError, match=message):
    SurrogatePlan.create(30, ranges)


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf")
  model = tiny_hf_llama(layers=8, tied=False)
  model.save_pretrained(path)
  params, config = load_model(str(path))
  return model, params, config


def _logits(params, config, segments, tokens):
  return np.asarray(Decoder(config, segments).apply({"params": params}, jnp.asarray(tokens))[0])


def test_identity_plan_reproduces_the_target_exactly(tiny_target):
  _, params, config = tiny_target
  plan = identity_plan(config.num_layers)
  surrogate = make_surrogate(params, plan)
  tokens = np.arange(24).reshape(2, 12) % 97
  np.testing.assert_array_equal(_logits(surrogate, config, plan.segments, tokens),
                                _logits(params, config, None, tokens))


@pytest.mark.parametrize("ranges", [[(4, 6)], [(0, 3)], [(2, 3), (5, 6)], [(1, 5, 2)], [(6, 6)]])
def test_surrogate_matches_transformers_with_layers_deleted(tiny_target, ranges):
  model, params, config = tiny_target
  plan = SurrogatePlan.create(config.num_layers, ranges)
  surrogate = make_surrogate(params, plan)
  kept = [l for _, _, layers in plan.layout() for l in layers]
  full_layers = model.model.layers
  try:
    model.model.layers = torch.nn.ModuleList([full_layers[i] for i in kept])
    model.config.num_hidden_layers = len(kept)
    tokens = np.random.default_rng(0).integers(0, 97, size=(2, 16))
    expected = hf_logits(model, tokens)
  finally:
    model.model.layers = full_layers
    model.config.num_hidden_layers = config.num_layers
  diff = np.abs(_logits(surrogate, config, plan.segments, tokens) - expected).max()
  assert diff <= 1e-4, diff
  assert surrogate["embed"]["embedding"] is params["embed"]["embedding"]  # shared, not copied


def test_plan_for_another_depth_is_refused(tiny_target):
  _, params, _ = tiny_target
  with pytest.raises(PlanError, match="plan is for 30 layers but the target has \\[8\\]"):
    make_surrogate(params, SurrogatePlan.create(30, [(20, 28)]))
  surrogate = make_surrogate(params, SurrogatePlan.create(8, [(4, 6)]))
  with pytest.raises(PlanError, match="needs the full target"):
    make_surrogate(surrogate, SurrogatePlan.create(8, [(4, 6)]))


def test_graft_swaps_only_the_encoder_side(tiny_target):
  _, params, _ = tiny_target
  plan = SurrogatePlan.create(8, [(4, 6)])
  target = {"img": {"w": jnp.zeros(3)}, "proj": {"w": jnp.zeros(2)}, "llm": params}
  trained = make_surrogate(target, plan)
  trained = {**trained, "img": {"w": jnp.ones(3)}, "proj": {"w": jnp.ones(2)}}
  grafted = graft(target, trained)
  assert grafted["llm"] is params
  assert float(grafted["img"]["w"].sum()) == 3 and float(grafted["proj"]["w"].sum()) == 2
  with pytest.raises(PlanError, match="lacks"):
    graft(target, {"llm": params})
