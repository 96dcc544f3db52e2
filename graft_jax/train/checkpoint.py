"""Training checkpoints (one Orbax CheckpointManager per run) and the exported encoder package.

Run directory layout (`RunCheckpointer`), one folder per saved step:
  <step>/trainable/   the trainable params only (frozen target weights are re-read from the base)
  <step>/opt_state/   optimizer state
  <step>/iterator/    data iterator state (JSON, `it.get_state()`)
  <step>/metadata/    JSON: config, plan, stage, trainable_spec, step, trainable_shapes
Orbax writes a step into `<step>.orbax-checkpoint-tmp-<ts>` and renames it when complete (on object
stores a `commit_success.txt` marks it), so a step cut short by a crash is never listed or restored.

Encoder package layout (`export_encoder_package`), what grafting consumes:
  params/        Orbax params {"img": encoder, "proj": adapter incl. soi/eoi}
  package.json   plan, encoder_config, target identity, param shapes, any extra metadata
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

ITEMS = ("trainable", "opt_state", "iterator", "metadata")
RUN_METADATA_KEYS = ("config", "plan", "stage", "trainable_spec")
TARGET_KEYS = ("hidden_size", "vocab_size", "num_layers", "tokenizer_fingerprint")
PACKAGE_FILE = "package.json"
PACKAGE_FORMAT = "graft_jax.encoder_package/1"


class CheckpointMismatchError(ValueError):
  """A checkpoint or package does not belong to the run or target it is loaded for."""


def tree_spec(tree) -> dict[str, dict]:
  """{"a/b/c": {"shape": [...], "dtype": "float32"}} for every leaf (arrays or abstract arrays)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p, simple=True, separator="/"):
          {"shape": [int(d) for d in x.shape], "dtype": np.dtype(x.dtype).name} for p, x in flat}


def spec_differences(got: Mapping[str, dict], expected: Mapping[str, dict], what: str) -> list[str]:
  """Missing, unexpected, mis-shaped and mis-typed leaves of `got` relative to `expected`."""
  out = [f"{what} path {p} {expected[p]['shape']} missing" for p in sorted(set(expected) - set(got))]
  out += [f"{what} path {p} {got[p]['shape']} unexpected" for p in sorted(set(got) - set(expected))]
  for p in sorted(set(got) & set(expected)):
    g, e = got[p], expected[p]
    if list(g["shape"]) != list(e["shape"]):
      out.append(f"{what} path {p}: shape {g['shape']} != expected {e['shape']}")
    if g["dtype"] != e["dtype"]:
      out.append(f"{what} path {p}: dtype {g['dtype']} != expected {e['dtype']}")
  return out


def _jsonable(x: Any) -> Any:
  return json.loads(json.dumps(x))


def _plan_dict(plan: Any) -> dict | None:
  return plan.to_dict() if hasattr(plan, "to_dict") else plan


def describe_plan(plan: Mapping | None) -> str:
  if plan is None:
    return "no surrogate plan (the full target)"
  return f"'{plan.get('description', plan.get('ranges'))}' ({plan['num_layers']} layers)"


def _same_plan(a: Mapping | None, b: Mapping | None) -> bool:
  if a is None or b is None:
    return a is None and b is None
  return a["num_layers"] == b["num_layers"] and _jsonable(a["ranges"]) == _jsonable(b["ranges"])


def run_metadata(config: Any, plan: Any, stage: str, trainable_spec: Any) -> dict:
  """The caller's part of a checkpoint's metadata: config (ConfigDict or dict), SurrogatePlan/dict/
  None, stage name, and the trainable spec (partition rules; a rule that is not a string is stored
  as its str(), which for partition.Rule is the canonical "REGEX[a:b]")."""
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  if isinstance(trainable_spec, (list, tuple)):
    trainable_spec = [r if isinstance(r, (str, dict, list)) else str(r) for r in trainable_spec]
  return _jsonable({"config": config, "plan": _plan_dict(plan), "stage": stage,
                    "trainable_spec": trainable_spec})


def _unflatten_spec(spec: Mapping[str, dict]) -> dict:
  """A tree of ShapeDtypeStructs (on the first device) from `tree_spec`'s flat {path: spec}."""
  return traverse_util.unflatten_dict(
      {path: _restore_target(jax.ShapeDtypeStruct(tuple(leaf["shape"]), jnp.dtype(leaf["dtype"])))
       for path, leaf in spec.items()}, sep="/")


def _restore_target(leaf):
  """An abstract leaf to restore into: its own sharding when it has one, else the first device."""
  sharding = getattr(leaf, "sharding", None)
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


class RunCheckpointer:
  """Saves and restores a run's train state, data position and metadata.

  `state` is a dataclass (flax.struct) with fields `step` (int scalar), `trainable` (params tree)
  and `opt_state`. `step` passed to `save` is the number of completed steps, i.e. `state.step`;
  `restore` rebuilds `state.step` from it. Saves are asynchronous: `save` returns once the arrays
  are copied off the device (so the next step may donate them) and the files are written in the
  background; `wait()` blocks until they are committed.
  """

  def __init__(self, directory: str, keep_last: int, save_every: int):
    if keep_last < 1:
      raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep_last, create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state, iterator_state: Any, metadata: Mapping,
           force: bool = False) -> bool:
    """Saves when `step` is a multiple of `save_every` or `force`; never the same step twice.
    `metadata` is `run_metadata(...)`. Returns whether a save was started."""
    if not (force or self.should_save(step)) or step in self._manager.all_steps():
      return False
    missing = [k for k in RUN_METADATA_KEYS if k not in metadata]
    if missing:
      raise ValueError(f"Checkpoint metadata lacks {missing}; build it with run_metadata()")
    meta = _jsonable({**metadata, "step": int(step), "trainable_shapes": tree_spec(state.trainable)})
    args = ocp.args.Composite(
        trainable=ocp.args.StandardSave(state.trainable),
        opt_state=ocp.args.StandardSave(state.opt_state),
        iterator=ocp.args.JsonSave({"iterator_state": iterator_state}),
        metadata=ocp.args.JsonSave(meta))
    return self._manager.save(step, args=args, force=True)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest committed step, or None; steps still being written are not listed."""
    return self._manager.latest_step()

  def read_metadata(self, step: int | None = None) -> dict:
    step = self._step_or_latest(step)
    return self._manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata

  def restore(self, abstract_state, expected_metadata: Mapping,
              step: int | None = None) -> tuple[Any, Any, dict]:
    """(state, iterator_state, metadata) of `step` (default: the latest), arrays restored into
    `abstract_state`'s shapes, dtypes and shardings (e.g. `jax.eval_shape` of the state, with
    shardings set). Raises CheckpointMismatchError naming every difference in plan, stage,
    trainable spec and trainable tree before any array is read."""
    step = self._step_or_latest(step)
    stored = self.read_metadata(step)
    problems = metadata_differences(stored, expected_metadata)
    problems += spec_differences(stored["trainable_shapes"], tree_spec(abstract_state.trainable),
                                 "trainable")
    if problems:
      raise CheckpointMismatchError(
          f"Checkpoint {self.directory} step {step} does not match this run: " + "; ".join(problems))
    target = jax.tree.map(_restore_target, (abstract_state.trainable, abstract_state.opt_state))
    out = self._manager.restore(step, args=ocp.args.Composite(
        trainable=ocp.args.StandardRestore(target[0]),
        opt_state=ocp.args.StandardRestore(target[1]),
        iterator=ocp.args.JsonRestore()))
    step_leaf = _restore_target(abstract_state.step)
    step_array = jax.device_put(np.asarray(step, step_leaf.dtype), step_leaf.sharding)
    state = dataclasses.replace(abstract_state, step=step_array, trainable=out.trainable,
                                opt_state=out.opt_state)
    return state, out.iterator["iterator_state"], stored

  def restore_trainable(self, step: int | None = None) -> tuple[dict, dict]:
    """(trainable params, metadata) of `step` (default: the latest) on the first device, without
    optimizer or data state: how a later stage starts from an earlier one's weights."""
    step = self._step_or_latest(step)
    stored = self.read_metadata(step)
    target = _unflatten_spec(stored["trainable_shapes"])
    out = self._manager.restore(step, args=ocp.args.Composite(
        trainable=ocp.args.StandardRestore(target)))
    return out.trainable, stored

  def _step_or_latest(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(f"No committed checkpoint {'' if step is None else step} in "
                              f"{self.directory} (steps: {self.all_steps()})")
    return step

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "RunCheckpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# Settings that change what a run learns (config path, value when the stored config predates it):
# a finished or half-done run made with other values must not be resumed or reused as if it were
# this one. The rest of the config (logging, checkpoint cadence, steps) may change on a resume.
RECIPE_FIELDS = ((("vit", "source"), ""), (("train", "encoder_lr_mult"), 1.0), (("train", "lr"), None),
                 (("train", "batch_size"), None), (("data", "question_types"), None),
                 (("data", "train_turns"), 1), (("train", "kl_weight"), 0.0), (("train", "kl_rows"), "all"),
                 (("train", "image_noise"), 0.0), (("train", "embed_penalty"), 0.0), (("mix",), []))


def _config_field(config: Mapping | None, path: tuple[str, ...], default: Any) -> Any:
  node = config or {}
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      return default
    node = node[key]
  return _jsonable(node)


def recipe_differences(stored: Mapping | None, expected: Mapping | None) -> list[str]:
  """The RECIPE_FIELDS on which two run configs (nested dicts) differ, one message each."""
  out = []
  for path, default in RECIPE_FIELDS:
    a, b = _config_field(stored, path, default), _config_field(expected, path, default)
    if a != b:
      out.append(f"{'.'.join(path)} differs: checkpoint {a!r}, this run {b!r}")
  return out


def metadata_differences(stored: Mapping, expected: Mapping) -> list[str]:
  """Plan, stage, trainable-spec and recipe (RECIPE_FIELDS) differences between a checkpoint and
  the run resuming it. The rest of the config is stored for the record but not compared."""
  out = recipe_differences(stored.get("config"), expected.get("config"))
  if not _same_plan(stored.get("plan"), expected.get("plan")):
    out.append(f"surrogate plan differs: checkpoint has {describe_plan(stored.get('plan'))}, "
               f"this run has {describe_plan(expected.get('plan'))}")
  if stored.get("stage") != expected.get("stage"):
    out.append(f"stage differs: checkpoint {stored.get('stage')!r}, this run {expected.get('stage')!r}")
  if _jsonable(stored.get("trainable_spec")) != _jsonable(expected.get("trainable_spec")):
    out.append(f"trainable spec differs: checkpoint {stored.get('trainable_spec')!r}, "
               f"this run {expected.get('trainable_spec')!r}")
  return out


def target_identity(llm_config: Any, tokenizer_fingerprint: str, name: str | None = None) -> dict:
  """What an encoder package must match in the LLM it is grafted into (from a LlamaConfig)."""
  ident = {"hidden_size": int(llm_config.hidden_size), "vocab_size": int(llm_config.vocab_size),
           "num_layers": int(llm_config.num_layers), "tokenizer_fingerprint": str(tokenizer_fingerprint)}
  return ident if name is None else {**ident, "name": name}


def export_encoder_package(directory: str, params_subtrees: Mapping, metadata: Mapping) -> None:
  """Writes the trained encoder and adapter for grafting. `params_subtrees` is {"img": the complete
  encoder, "proj": the adapter with soi/eoi}; `metadata` holds "plan" (SurrogatePlan, dict or None),
  "encoder_config" (dict) and "target" (`target_identity(...)`), plus any JSON-able extras.
  The package is built next to `directory` and renamed into place, so it appears complete or not at all."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise FileExistsError(f"{directory} already exists; export each package to a new directory")
  if set(params_subtrees) != {"img", "proj"}:
    raise ValueError(f"An encoder package holds exactly 'img' and 'proj', got {sorted(params_subtrees)}")
  missing = [k for k in ("plan", "encoder_config", "target") if k not in metadata]
  missing += [f"target.{k}" for k in TARGET_KEYS if k not in metadata.get("target", {})]
  missing += [f"proj.{k}" for k in ("soi", "eoi") if k not in params_subtrees["proj"]]
  if missing:
    raise ValueError(f"Encoder package lacks {missing}")
  width, hidden = params_subtrees["proj"]["soi"].shape[-1], metadata["target"]["hidden_size"]
  if width != hidden:
    raise ValueError(f"Adapter output width {width} != target hidden_size {hidden}")
  package = _jsonable({**metadata, "format": PACKAGE_FORMAT, "plan": _plan_dict(metadata["plan"]),
                       "param_shapes": tree_spec(params_subtrees)})
  tmp = directory + ".tmp-export"
  shutil.rmtree(tmp, ignore_errors=True)  # left by an export that crashed
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(tmp, "params"), dict(params_subtrees))
  checkpointer.wait_until_finished()
  checkpointer.close()
  with open(os.path.join(tmp, PACKAGE_FILE), "w") as f:
    json.dump(package, f, indent=2)
  os.rename(tmp, directory)


def load_encoder_package(directory: str) -> tuple[dict, dict]:
  """(params {"img", "proj"}, metadata) of `export_encoder_package`; shapes checked against the
  recorded ones. Check the target with `check_package_matches(metadata, target_identity(...))`."""
  directory = os.path.abspath(directory)
  path = os.path.join(directory, PACKAGE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory} is not an encoder package (no {PACKAGE_FILE})")
  with open(path) as f:
    metadata = json.load(f)
  if metadata.get("format") != PACKAGE_FORMAT:
    raise ValueError(f"{path}: format {metadata.get('format')!r}, expected {PACKAGE_FORMAT!r}")
  checkpointer = ocp.StandardCheckpointer()
  params = checkpointer.restore(os.path.join(directory, "params"))
  checkpointer.close()
  diffs = spec_differences(tree_spec(params), metadata["param_shapes"], "package")
  if diffs:
    raise CheckpointMismatchError(f"Encoder package {directory} is inconsistent: " + "; ".join(diffs))
  return params, metadata


def check_package_matches(metadata: Mapping, target: Mapping) -> None:
  """Raises CheckpointMismatchError naming every way the package's target differs from `target`
  (`target_identity(...)` of the LLM being grafted into). The TARGET_KEYS are always compared;
  other keys (e.g. "name") when both sides have them."""
  stored = metadata["target"]
  keys = list(TARGET_KEYS) + sorted((set(stored) & set(target)) - set(TARGET_KEYS))
  absent = "<absent>"
  diffs = [f"{k}: package {stored.get(k, absent)!r} != target {target.get(k, absent)!r}"
           for k in keys if stored.get(k, absent) != target.get(k, absent)]
  if diffs:
    raise CheckpointMismatchError("Encoder package was trained for another target: " + "; ".join(diffs))
