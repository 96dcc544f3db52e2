"""Partition specs: split/merge, layer slices, describe, and every bad rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graft_jax.train.partition import Rule, Sliced, describe, merge, parse_rule, select, spec_strings, split
from graft_jax.train.paths import leaves_with_paths
from tests.train_setup import SPEC, setup


def _params():
  return setup()[2]


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_split_then_merge_gives_back_the_params_also_under_jit():
  params = _params()
  trainable, frozen = split(params, SPEC)
  _assert_same(merge(trainable, frozen), params)
  _assert_same(jax.jit(merge)(trainable, frozen), params)


def test_split_puts_the_declared_subtrees_in_trainable():
  trainable, frozen = split(_params(), SPEC)
  paths = {p for p, _ in leaves_with_paths(trainable)}
  assert {p.split("/")[0] for p in paths} == {"img", "proj", "llm"}
  assert all(p.startswith(("img/post_ln/", "img/blocks/", "proj/", "llm/segments/translator_0/")) for p in paths)
  assert "translator_0" not in frozen["llm"]["segments"]
  assert set(frozen["llm"]["segments"]) == {"blocks_0", "blocks_1"}
  assert "proj" not in frozen and "post_ln" not in frozen["img"]
  assert "patch_embed" in frozen["img"] and "patch_embed" not in trainable["img"]


def test_a_sliced_rule_splits_the_layer_axis():
  params = _params()
  trainable, frozen = split(params, SPEC)  # img/blocks/.*[-1:] of 2 layers
  kernel = params["img"]["blocks"]["attn"]["q_proj"]["kernel"]
  rest = frozen["img"]["blocks"]["attn"]["q_proj"]["kernel"]
  assert isinstance(rest, Sliced)
  np.testing.assert_array_equal(trainable["img"]["blocks"]["attn"]["q_proj"]["kernel"], kernel[1:])
  np.testing.assert_array_equal(rest.before, kernel[:1])
  assert rest.after.shape == (0, *kernel.shape[1:])


def test_a_middle_slice_and_a_whole_stack():
  tree = {"img": {"blocks": {"w": jnp.arange(12.0).reshape(4, 3)}, "post_ln": {"scale": jnp.ones(3)}}}
  trainable, frozen = split(tree, ["img/blocks/w[1:3]"])
  np.testing.assert_array_equal(trainable["img"]["blocks"]["w"], tree["img"]["blocks"]["w"][1:3])
  np.testing.assert_array_equal(frozen["img"]["blocks"]["w"].before, tree["img"]["blocks"]["w"][:1])
  np.testing.assert_array_equal(frozen["img"]["blocks"]["w"].after, tree["img"]["blocks"]["w"][3:])
  _assert_same(merge(trainable, frozen), tree)
  # a slice covering every layer, or two rules whose slices join, train the whole leaf
  assert select(tree, ["img/blocks/w[0:]", "img/post_ln/.*"])["img/blocks/w"] == "all"
  assert select(tree, ["img/blocks/w[:2]", "img/blocks/w[2:]"])["img/blocks/w"] == "all"


def test_rule_forms_are_equivalent():
  assert parse_rule("img/blocks/.*[-8:]") == Rule("img/blocks/.*", (-8, None))
  assert parse_rule(("img/blocks/.*", slice(-8, None))) == Rule("img/blocks/.*", (-8, None))
  assert parse_rule("proj/.*") == Rule("proj/.*")
  assert spec_strings(["img/blocks/.*[-8:]", Rule("a", (1, 3)), "proj/.*"]) == \
      ["img/blocks/.*[-8:]", "a[1:3]", "proj/.*"]


@pytest.mark.parametrize("spec, message", [
    (["proj/.*", "img/nothing_here/.*"], r"img/nothing_here/\.\*.*match no parameter"),
    (["proj/fc1/kernel[-1:]"], "no layer axis"),
    (["img/blocks/.*[5:]"], "selects no layer"),
    (["img/blocks/.*[0:1]", "img/blocks/.*[3:]"], None),
    ([], "empty"),
    (["proj/(unclosed"], "not a valid regex"),
])
def test_bad_specs_raise_naming_the_rule(spec, message):
  params = _params()
  if message is None:  # non-contiguous layers need >= 3 layers: use a deeper fake stack
    params = {**params, "img": {**params["img"], "blocks": {"w": jnp.zeros((4, 2))}}}
    message = "not one contiguous run"
  with pytest.raises(ValueError, match=message):
    split(params, spec)


def test_describe_counts_every_parameter():
  params = _params()
  text = describe(params, SPEC)
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(split(params, SPEC)[0]))
  last = [line for line in text.splitlines() if line.startswith("total")][0].split()
  assert int(last[1].replace(",", "")) == trainable
  assert int(last[2].replace(",", "")) == total - trainable
  proj_line = [line for line in text.splitlines() if line.startswith("proj")][0]
  assert proj_line.split()[2] == "0" and proj_line.endswith("100.00%")
  assert "img/blocks/.*[-1:]" in text
