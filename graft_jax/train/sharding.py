"""Device mesh, parameter PartitionSpecs from ordered regex rules, and activation logical axes.

Mesh: named axes from the config, e.g. [("data", -1), ("fsdp", 1), ("tensor", 1)]; -1 takes the
remaining devices. The batch is sharded over ("data", "fsdp").

Parameter rules: an ordered list of (regex, spec); the first regex that fully matches a param's
"/"-joined path (see train/paths.py) decides, and a param no rule matches is an error naming it.
A spec describes the dims AFTER the layer axis (stacked leaves keep their layer axis unsharded):
  (a0, a1, ...)  one entry per dim: a mesh axis name, a tuple of names, or None (replicated);
                 a dim must be divisible by the size of its axes, else an error names the param
  FSDP           the largest dim divisible by the "fsdp" size is sharded on "fsdp"
  REPLICATE      replicated
Axis names absent from the mesh are ignored, so the same rules serve any subset of axes.

Activations carry logical names (models/llama.py, vit.py); LOGICAL_RULES maps them to mesh axes
(batch -> ("data", "fsdp"), mlp/heads/vocab -> "tensor", the rest unsharded) inside the step.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from graft_jax.train.paths import is_stacked, leaves_with_paths, map_with_paths

MeshSpec = Sequence[tuple[str, int]]
ParamRules = Sequence[tuple[str, Any]]

DEFAULT_MESH: MeshSpec = (("data", -1), ("fsdp", 1), ("tensor", 1))
BATCH_AXES = ("data", "fsdp")
FSDP = "fsdp"
REPLICATE = "replicate"

_SEG = r"(llm/)?segments/[^/]+"
DEFAULT_PARAM_RULES: ParamRules = (
    # decoder: fsdp on the model width, tensor on heads / mlp / vocab
    (rf"{_SEG}/attn/(q|k|v)_proj/kernel", ("fsdp", "tensor")),      # [D, H * hd]
    (rf"{_SEG}/attn/o_proj/kernel", ("tensor", "fsdp")),            # [H * hd, D]
    (rf"{_SEG}/mlp/(gate|up)_proj/kernel", ("fsdp", "tensor")),     # [D, F]
    (rf"{_SEG}/mlp/down_proj/kernel", ("tensor", "fsdp")),          # [F, D]
    # [V, D]: vocab over both axes; fsdp on D makes XLA replicate the lookup's output (a warning)
    (r"(llm/)?embed/embedding", (("tensor", "fsdp"), None)),
    (r"(llm/)?head/kernel", ("fsdp", "tensor")),                    # [D, V]
    # LoRA factors (train/lora.py) A [in, r], B [r, out]: in / out sharded like their kernel's,
    # so A @ B lands in the kernel's layout; the rank dim stays whole
    (r"lora/segments/[^/]+/(attn/(q|k|v)_proj|mlp/(gate|up)_proj)/a", ("fsdp", None)),
    (r"lora/segments/[^/]+/(attn/(q|k|v)_proj|mlp/(gate|up)_proj)/b", (None, "tensor")),
    (r"lora/segments/[^/]+/(attn/o_proj|mlp/down_proj)/a", ("tensor", None)),
    (r"lora/segments/[^/]+/(attn/o_proj|mlp/down_proj)/b", (None, "fsdp")),
    # encoder blocks
    (r"img/blocks/attn/(q|k|v)_proj/kernel", ("fsdp", "tensor")),
    (r"img/blocks/attn/(q|k|v)_proj/bias", ("tensor",)),
    (r"img/blocks/attn/out_proj/kernel", ("tensor", "fsdp")),
    (r"img/blocks/mlp/fc1/kernel", ("fsdp", "tensor")),
    (r"img/blocks/mlp/fc1/bias", ("tensor",)),
    (r"img/blocks/mlp/fc2/kernel", ("tensor", "fsdp")),
    # norms, remaining biases and single vectors
    (r".*(norm|ln1|ln2|pre_ln|post_ln)/(scale|bias)", REPLICATE),
    (r"(img|proj)/.*bias", REPLICATE),
    (r"proj/(soi|eoi)|img/cls_token", REPLICATE),
    # remaining matrices: patch embedding, position embedding, adapter
    (r"img/(patch_embed/kernel|pos_embed)|proj/fc\d+/kernel", FSDP),
)

LOGICAL_RULES = (
    ("batch", BATCH_AXES), ("length", None), ("embed", None), ("mlp", "tensor"),
    ("heads", "tensor"), ("kv_heads", "tensor"), ("vocab", "tensor"), ("norm", None), ("layers", None),
)


def make_mesh(axes: MeshSpec = DEFAULT_MESH, devices: Sequence[Any] | None = None) -> Mesh:
  """A Mesh with the named axes (sizes; one may be -1 = the remaining devices) over `devices`
  (default: all). Axis types are Auto: jit propagates shardings from the constraints."""
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(name for name, _ in axes)
  sizes = [int(size) for _, size in axes]
  if len(set(names)) != len(names) or sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"Bad mesh axes {list(axes)}: unique names, sizes >= 1, at most one -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"Mesh axes {list(axes)} do not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"Mesh axes {list(axes)} need {math.prod(sizes)} devices, have {len(devices)}")
  grid = mesh_utils.create_device_mesh(sizes, devices=devices)
  return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def _axis_size(mesh: Mesh, axes) -> int:
  axes = axes if isinstance(axes, tuple) else (axes,)
  return math.prod(mesh.shape[a] for a in axes if a is not None)


def _keep_mesh_axes(mesh: Mesh, entry):
  """An entry without the axis names the mesh lacks (None when nothing is left)."""
  if entry is None:
    return None
  kept = tuple(a for a in (entry if isinstance(entry, tuple) else (entry,)) if a in mesh.shape)
  return None if not kept else kept[0] if len(kept) == 1 else kept


def param_spec(path: str, shape: Sequence[int], rules: ParamRules, mesh: Mesh) -> PartitionSpec:
  """The PartitionSpec of one param (see the module docstring)."""
  for pattern, spec in rules:
    if re.fullmatch(pattern, path):
      break
  else:
    raise ValueError(f"No sharding rule matches parameter {path} {tuple(shape)}")
  lead = (None,) if is_stacked(path) else ()
  dims = tuple(shape[len(lead):])
  if spec == REPLICATE:
    return PartitionSpec()
  if spec == FSDP:
    size = mesh.shape.get("fsdp", 1)
    fits = [i for i, d in enumerate(dims) if d % size == 0]
    if "fsdp" not in mesh.shape or not fits:
      return PartitionSpec()
    best = max(fits, key=lambda i: (dims[i], -i))
    return PartitionSpec(*lead, *("fsdp" if i == best else None for i in range(len(dims))))
  if len(spec) != len(dims):
    raise ValueError(f"Sharding rule {pattern!r} gives {len(spec)} dims for parameter {path} "
                     f"with shape {tuple(shape)} ({len(dims)} dims after the layer axis)")
  entries = tuple(_keep_mesh_axes(mesh, e) for e in spec)
  for d, e in zip(dims, entries):
    if e is not None and d % _axis_size(mesh, e):
      raise ValueError(f"Parameter {path} {tuple(shape)}: dim {d} is not divisible by mesh axes "
                       f"{e} (size {_axis_size(mesh, e)}), rule {pattern!r}")
  return PartitionSpec(*lead, *entries)


def param_specs(tree, rules: ParamRules, mesh: Mesh):
  """The tree of PartitionSpecs for a params-like tree (arrays or ShapeDtypeStructs)."""
  return map_with_paths(lambda p, x: param_spec(p, x.shape, rules, mesh), tree)


def param_shardings(tree, rules: ParamRules, mesh: Mesh):
  """The tree of NamedShardings for a params-like tree."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(tree, rules, mesh),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def logical_rules_for(mesh: Mesh, rules=LOGICAL_RULES) -> tuple:
  """The logical-axis rules without the mesh axes `mesh` lacks (for nn.logical_axis_rules)."""
  return tuple((name, _keep_mesh_axes(mesh, axes)) for name, axes in rules)


def batch_axes(mesh: Mesh):
  """The mesh axes of the batch dimension (those of BATCH_AXES the mesh has), or None."""
  return _keep_mesh_axes(mesh, BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Every batch leaf [B, ...] split on its first dim over ("data", "fsdp")."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_size_multiple(mesh: Mesh) -> int:
  """Rows of a (micro-)batch must be a multiple of this."""
  return _axis_size(mesh, batch_axes(mesh)) if batch_axes(mesh) else 1


def describe_specs(tree, rules: ParamRules, mesh: Mesh) -> str:
  """One line per param: path, shape, PartitionSpec (for logs)."""
  return "\n".join(f"{path} {tuple(x.shape)} {param_spec(path, x.shape, rules, mesh)}"
                   for path, x in leaves_with_paths(tree))
