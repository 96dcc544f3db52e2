"""RunCheckpointer (save/restore, keep-last, periodic, mismatches, atomicity) and encoder packages."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from ml_collections import ConfigDict

from graft_jax.surrogate import SurrogatePlan
from graft_jax.train import checkpoint as ck

PLAN = SurrogatePlan.create(30, [(19, 28)])
SPEC = ["img/blocks", "proj", "llm/segments/translator_0"]


@struct.dataclass
class State:
  step: jax.Array
  trainable: dict
  opt_state: Any


def _trainable(width: int = 6, seed: int = 0) -> dict:
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
  return {"img": {"blocks": {"w": f(2, 3, 4)}},
          "proj": {"fc1": {"kernel": f(4, width), "bias": f(width)}, "soi": f(width), "eoi": f(width)},
          "llm": {"segments": {"translator_0": {"w": f(1, width, width)}}}}


def _state(step: int = 3, width: int = 6, seed: int = 0) -> State:
  params = _trainable(width, seed)
  tx = optax.adam(1e-2)
  opt = tx.init(params)
  updates, opt = tx.update(jax.tree.map(jnp.ones_like, params), opt, params)
  return State(jnp.int32(step), optax.apply_updates(params, updates), opt)


def _meta(plan=PLAN, stage="stage1", spec=SPEC) -> dict:
  return ck.run_metadata(ConfigDict({"lr": 1e-3, "batch": 4}), plan, stage, spec)


def _save(ckpt, step, force=False, seed=0):
  return ckpt.save(step, _state(step, seed=seed), {"epoch": 1, "position": step * 4}, _meta(), force=force)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_state_iterator_and_metadata(tmp_path):
  state = _state(7)
  with ck.RunCheckpointer(str(tmp_path), keep_last=3, save_every=100) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(7, state, {"epoch": 2, "position": 31}, _meta(), force=True)
    ckpt.wait()
    assert sorted(os.listdir(tmp_path / "7")) == sorted(
        ["trainable", "opt_state", "iterator", "metadata", "_CHECKPOINT_METADATA", "commit_success.txt"])
  # A fresh checkpointer (a resumed process) restores into an abstract state, one leaf sharded.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("d",))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  abstract = jax.eval_shape(lambda: _state(0, seed=1))
  abstract = abstract.replace(trainable=jax.tree_util.tree_map_with_path(
      lambda p, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharded)
      if jax.tree_util.keystr(p) == "['proj']['soi']" else x, abstract.trainable))
  with ck.RunCheckpointer(str(tmp_path), keep_last=3, save_every=100) as ckpt:
    assert ckpt.latest_step() == 7
    restored, it_state, meta = ckpt.restore(abstract, _meta())
  assert isinstance(restored, State) and int(restored.step) == 7
  _assert_trees_equal(restored.trainable, state.trainable)
  _assert_trees_equal(restored.opt_state, state.opt_state)
  assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
  assert restored.trainable["proj"]["soi"].sharding == sharded
  assert it_state == {"epoch": 2, "position": 31}
  assert meta["step"] == 7 and meta["stage"] == "stage1" and meta["plan"] == PLAN.to_dict()
  assert meta["config"] == {"lr": 1e-3, "batch": 4} and meta["trainable_spec"] == SPEC
  assert meta["trainable_shapes"]["proj/fc1/kernel"] == {"shape": [4, 6], "dtype": "float32"}


def test_periodic_forced_and_keep_last(tmp_path):
  with ck.RunCheckpointer(str(tmp_path), keep_last=2, save_every=5) as ckpt:
    saved = [s for s in range(1, 16) if _save(ckpt, s)]
    assert saved == [5, 10, 15]
    assert _save(ckpt, 17, force=True)
    assert not _save(ckpt, 17, force=True)  # the same step is never written twice
    ckpt.wait()
    assert ckpt.all_steps() == [15, 17] and ckpt.latest_step() == 17
  assert sorted(os.listdir(tmp_path)) == ["15", "17"]


def _restore_error(tmp_path, abstract_state, expected) -> str:
  with ck.RunCheckpointer(str(tmp_path), keep_last=2, save_every=1) as ckpt:
    _save(ckpt, 1)
    ckpt.wait()
    with pytest.raises(ck.CheckpointMismatchError) as e:
      ckpt.restore(abstract_state, expected)
  return str(e.value)


def test_plan_mismatch_names_both_plans(tmp_path):
  other = SurrogatePlan.create(30, [(18, 28)])
  msg = _restore_error(tmp_path, jax.eval_shape(_state), _meta(plan=other))
  assert "surrogate plan differs" in msg
  assert PLAN.describe() in msg and other.describe() in msg
  assert "stage" not in msg and "trainable path" not in msg


def test_stage_mismatch(tmp_path):
  msg = _restore_error(tmp_path, jax.eval_shape(_state), _meta(stage="stage2"))
  assert "stage differs" in msg and "'stage1'" in msg and "'stage2'" in msg
  assert "plan" not in msg


def _recipe_config(**changes) -> ConfigDict:
  cfg = {"vit": {"source": "runs/vision_encoder"}, "data": {"question_types": ["color", "shape"], "train_turns": 1},
         "train": {"lr": 1e-3, "batch_size": 16, "encoder_lr_mult": 0.1, "steps": 240}}
  for path, value in changes.items():
    section, key = path.split(".")
    cfg[section][key] = value
  return ConfigDict(cfg)


def test_a_run_made_with_another_recipe_is_refused(tmp_path):
  with ck.RunCheckpointer(str(tmp_path), keep_last=2, save_every=1) as ckpt:
    ckpt.save(1, _state(1), {"epoch": 1, "position": 4}, ck.run_metadata(_recipe_config(), PLAN, "stage1", SPEC))
    ckpt.wait()
    def restore_with(**changes):
      return ckpt.restore(jax.eval_shape(_state), ck.run_metadata(_recipe_config(**changes), PLAN, "stage1", SPEC))
    with pytest.raises(ck.CheckpointMismatchError) as e:
      restore_with(**{"vit.source": "", "train.encoder_lr_mult": 1.0})
    assert "vit.source differs: checkpoint 'runs/vision_encoder', this run ''" in str(e.value)
    assert "train.encoder_lr_mult differs: checkpoint 0.1, this run 1.0" in str(e.value)
    with pytest.raises(ck.CheckpointMismatchError, match="data.question_types differs"):
      restore_with(**{"data.question_types": ["color"]})
    with pytest.raises(ck.CheckpointMismatchError, match="train.kl_weight differs: checkpoint 0.0, this run 1.0"):
      restore_with(**{"train.kl_weight": 1.0})  # e.g. stage 1 anchored by KL resuming a plain stage 1
    with pytest.raises(ck.CheckpointMismatchError, match="train.image_noise differs: checkpoint 0.0, this run 0.5"):
      restore_with(**{"train.image_noise": 0.5})
    with pytest.raises(ck.CheckpointMismatchError, match="train.embed_penalty differs: checkpoint 0.0, this run 1.0"):
      restore_with(**{"train.embed_penalty": 1.0})
    # steps, logging and checkpoint cadence may change on a resume
    _, _, meta = restore_with(**{"train.steps": 480})
    assert meta["step"] == 1
  # a run trained against several surrogates (config.mix) is not resumed as another mix or as none
  mixed = {"mix": ((((26, 28),), "runs/t26"),)}
  assert ck.recipe_differences(mixed, {"mix": ()}) == ["mix differs: checkpoint [[[[26, 28]], 'runs/t26']], this run []"]
  assert ck.recipe_differences({}, {"mix": ()}) == [] and ck.recipe_differences(mixed, mixed) == []


def test_a_run_from_before_a_recipe_field_existed_reads_as_its_default():
  old = {"vit": {}, "train": {"lr": 1e-3, "batch_size": 16}, "data": {"question_types": ["color"]}}
  new = _recipe_config(**{"vit.source": "", "train.encoder_lr_mult": 1.0,
                          "data.question_types": ["color"]}).to_dict()
  assert ck.recipe_differences(old, new) == []
  assert ck.recipe_differences(old, _recipe_config(**{"data.question_types": ["color"]}).to_dict()) == [
      "vit.source differs: checkpoint '', this run 'runs/vision_encoder'",
      "train.encoder_lr_mult differs: checkpoint 1.0, this run 0.1"]


def test_missing_unexpected_and_misshaped_paths_are_each_named(tmp_path):
  def changed():
    s = _state(width=6)
    t = dict(s.trainable)
    del t["llm"]
    t["extra"] = {"b": jnp.zeros(2)}
    return State(s.step, t, optax.adam(1e-2).init(t))
  abstract = jax.eval_shape(changed)
  abstract = abstract.replace(trainable={**abstract.trainable, "img": {"blocks": {
      "w": jax.ShapeDtypeStruct((2, 3, 5), jnp.float32)}}})
  msg = _restore_error(tmp_path, abstract, _meta())
  assert "trainable path llm/segments/translator_0/w [1, 6, 6] unexpected" in msg
  assert "trainable path extra/b [2] missing" in msg
  assert "trainable path img/blocks/w: shape [2, 3, 4] != expected [2, 3, 5]" in msg


def test_mismatch_fails_before_reading_arrays(tmp_path, monkeypatch):
  with ck.RunCheckpointer(str(tmp_path), keep_last=2, save_every=1) as ckpt:
    _save(ckpt, 1)
    ckpt.wait()
    real_restore = ckpt._manager.restore
    def guarded(step, args=None, **kw):
      assert set(args.keys()) == {"metadata"}, "arrays were read before the metadata check"
      return real_restore(step, args=args, **kw)
    monkeypatch.setattr(ckpt._manager, "restore", guarded)
    with pytest.raises(ck.CheckpointMismatchError, match="stage differs"):
      ckpt.restore(jax.eval_shape(_state), _meta(stage="stage2"))


def test_uncommitted_step_is_ignored(tmp_path):
  with ck.RunCheckpointer(str(tmp_path), keep_last=3, save_every=1) as ckpt:
    _save(ckpt, 2)
    ckpt.wait()
  # What a crash mid-write leaves: a step directory Orbax never renamed into place. (A save made to
  # fail inside Orbax's background threads raises TypeError or OSError depending on thread timing,
  # so the crash is simulated by its on-disk result instead.)
  partial = tmp_path / "9.orbax-checkpoint-tmp-1700000000000000"
  (partial / "trainable").mkdir(parents=True)
  (partial / "trainable" / "half_written").write_bytes(b"\0" * 10)
  with ck.RunCheckpointer(str(tmp_path), keep_last=3, save_every=1) as ckpt:
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [2]
    state, it_state, _ = ckpt.restore(jax.eval_shape(_state), _meta())
    _save(ckpt, 3)
    ckpt.wait()
    assert sorted(os.listdir(tmp_path)) == ["2", "3"]  # leftovers are removed by the resumed run
  assert int(state.step) == 2 and it_state == {"epoch": 1, "position": 8}
  with pytest.raises(FileNotFoundError, match="No committed checkpoint 9"):
    ck.RunCheckpointer(str(tmp_path), keep_last=3, save_every=1).restore(
        jax.eval_shape(_state), _meta(), step=9)


@dataclasses.dataclass(frozen=True)
class _Rule:
  pattern: str
  layers: tuple[int, int]

  def __str__(self) -> str:
    return f"{self.pattern}[{self.layers[0]}:{self.layers[1]}]"


def test_run_metadata_stores_rules_as_strings():
  meta = ck.run_metadata({"lr": 1.0}, None, "stage0", ["proj/.*", _Rule("img/blocks/.*", (-8, 0))])
  assert meta == {"config": {"lr": 1.0}, "plan": None, "stage": "stage0",
                  "trainable_spec": ["proj/.*", "img/blocks/.*[-8:0]"]}


def test_save_requires_run_metadata(tmp_path):
  with ck.RunCheckpointer(str(tmp_path), keep_last=1, save_every=1) as ckpt:
    with pytest.raises(ValueError, match="stage"):
      ckpt.save(1, _state(), {}, {"config": {}, "plan": None, "trainable_spec": SPEC})


# ---- encoder package ----

def _target(**kw) -> dict:
  return {"hidden_size": 6, "vocab_size": 49152, "num_layers": 30,
          "tokenizer_fingerprint": "sha256:abc", "name": "smollm2-135m", **kw}


def _package_meta(**kw) -> dict:
  return {"plan": PLAN, "encoder_config": {"width": 4, "num_layers": 2}, "target": _target(),
          "stage": "stage2", **kw}


def _encoder():
  t = _trainable()
  return {"img": t["img"], "proj": t["proj"]}


def test_encoder_package_round_trip(tmp_path):
  out = str(tmp_path / "pkg")
  ck.export_encoder_package(out, _encoder(), _package_meta())
  assert sorted(os.listdir(tmp_path)) == ["pkg"]  # no temporary left next to it
  params, meta = ck.load_encoder_package(out)
  _assert_trees_equal(params, _encoder())
  assert meta["plan"] == PLAN.to_dict() and meta["encoder_config"]["width"] == 4
  assert meta["stage"] == "stage2"
  ck.check_package_matches(meta, _target())
  with pytest.raises(FileExistsError):
    ck.export_encoder_package(out, _encoder(), _package_meta())


def test_target_identity_from_config():
  cfg = ConfigDict({"hidden_size": 6, "vocab_size": 49152, "num_layers": 30})
  assert ck.target_identity(cfg, "sha256:abc", name="smollm2-135m") == _target()


@pytest.mark.parametrize("change, named", [
    ({"hidden_size": 2048}, ["hidden_size: package 6 != target 2048"]),
    ({"tokenizer_fingerprint": "sha256:def"}, ["tokenizer_fingerprint: package 'sha256:abc'"]),
    ({"name": "llama-3.2-3b", "num_layers": 28, "vocab_size": 128256},
     ["name: package 'smollm2-135m' != target 'llama-3.2-3b'", "num_layers: package 30 != target 28",
      "vocab_size: package 49152 != target 128256"]),
])
def test_package_target_mismatch_names_each(tmp_path, change, named):
  ck.export_encoder_package(str(tmp_path / "pkg"), _encoder(), _package_meta())
  _, meta = ck.load_encoder_package(str(tmp_path / "pkg"))
  with pytest.raises(ck.CheckpointMismatchError) as e:
    ck.check_package_matches(meta, _target(**change))
  for text in named:
    assert text in str(e.value)
  assert str(e.value).count("package") == len(named) + 1


def test_package_export_validation(tmp_path):
  with pytest.raises(ValueError, match="exactly 'img' and 'proj'"):
    ck.export_encoder_package(str(tmp_path / "a"), {**_encoder(), "llm": {}}, _package_meta())
  no_eoi = _encoder()
  del no_eoi["proj"]["eoi"]
  with pytest.raises(ValueError, match=r"proj\.eoi"):
    ck.export_encoder_package(str(tmp_path / "b"), no_eoi, _package_meta())
  with pytest.raises(ValueError, match="width 6 != target hidden_size 2048"):
    ck.export_encoder_package(str(tmp_path / "c"), _encoder(),
                              _package_meta(target=_target(hidden_size=2048)))
  assert not os.listdir(tmp_path)
