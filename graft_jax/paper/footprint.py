"""Per-device memory of sharded abstract trees, the fit check, and the fsdp size that would fit.

A leaf's per-device bytes are its shard's (`sharding.shard_shape`) times its itemsize. Leaves
sharded over "fsdp" shrink as fsdp grows; the rest (replicated, activations) stays: that is how
the smallest fsdp size that fits is estimated.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from graft_jax.paper.checks import RecipeError
from graft_jax.paper.hardware import GIB


class PlanDoesNotFit(RecipeError):
  """The per-device memory of a plan exceeds the device's; the message says what to change."""


def _shard_bytes(x) -> int:
  shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
  return math.prod(shape) * np.dtype(x.dtype).itemsize


def _on_fsdp(x) -> bool:
  spec = getattr(getattr(x, "sharding", None), "spec", ()) or ()
  return any(e == "fsdp" or (isinstance(e, tuple) and "fsdp" in e) for e in spec)


def tree_bytes(tree) -> int:
  """Bytes per device of a tree of ShapeDtypeStructs with shardings (or arrays)."""
  return sum(_shard_bytes(x) for x in jax.tree.leaves(tree))


def fsdp_bytes(tree) -> int:
  """Bytes per device of the leaves sharded over "fsdp" (those that shrink as fsdp grows)."""
  return sum(_shard_bytes(x) for x in jax.tree.leaves(tree) if _on_fsdp(x))


@dataclasses.dataclass(frozen=True)
class Footprint:
  """Per-device bytes. `gradients`: the step's float32 gradient accumulators (sharded like the
  trainable params); `activations`: XLA's temporaries after compilation (None before), which
  hold the gradient accumulators too, so `total` counts them once."""
  params: int
  optimizer: int
  gradients: int
  batch: int
  activations: int | None = None
  scalable: int = 0   # the part of params + optimizer + gradients sharded over fsdp

  @property
  def total(self) -> int:
    if self.activations is None:
      return self.params + self.optimizer + self.gradients + self.batch
    return self.params + self.optimizer + self.batch + self.activations

  def describe(self) -> str:
    parts = [f"parameters {self.params / GIB:.1f}", f"optimizer state {self.optimizer / GIB:.1f}"]
    if self.activations is None:
      parts.append(f"gradient accumulators {self.gradients / GIB:.1f}")
    parts.append(f"batch {self.batch / GIB:.2f}")
    if self.activations is not None:
      parts.append(f"activations and temporaries {self.activations / GIB:.1f}")
    return ", ".join(parts) + " GiB"


def min_fsdp(fp: Footprint, fsdp: int, limit: float) -> int | None:
  """The smallest power-of-two fsdp size at which `fp` (measured at `fsdp`) fits `limit` bytes if
  only params, optimizer state and gradients shrink (an upper bound: XLA's temporaries hold sharded
  copies too), or None when the part that does not shrink with fsdp is already too big."""
  fixed = fp.total - fp.scalable
  if fixed >= limit:
    return None
  need = fp.scalable * fsdp / (limit - fixed)
  return 2 ** max(0, math.ceil(math.log2(max(need, 1.0))))


def check_fits(fp: Footprint, *, what: str, devices: int, mesh_shape: dict, device_name: str,
               limit_gib: float, per_device_batch: int) -> None:
  """Raises PlanDoesNotFit (naming the sizes and what to change) when fp.total > limit_gib."""
  limit = limit_gib * GIB
  if fp.total <= limit:
    return
  mesh = " ".join(f"{k}={v}" for k, v in mesh_shape.items())
  alone = " before activations" if fp.activations is None else ""
  head = (f"{what} needs ~{fp.total / GIB:.1f} GiB per device{alone} on {devices} devices (mesh {mesh}; "
          f"{fp.describe()}), but {device_name} has {limit_gib:.1f} GiB (hardware.memory_gib)")
  fsdp = mesh_shape.get("fsdp", 1)
  n = min_fsdp(fp, fsdp, limit)
  if n is None:
    raise PlanDoesNotFit(f"{head}; the part that does not shrink with fsdp alone is too big: lower "
                         f"train.per_device_batch (now {per_device_batch}) or raise hardware.memory_gib")
  then = ("; activations come on top: dry-run that mesh" if fp.activations is None
          else " (at most: some temporaries shrink with fsdp too, so dry-run smaller sizes)")
  if n <= devices:
    raise PlanDoesNotFit(f"{head}; use fsdp >= {n}{then}: --config.mesh='((\"data\", -1), (\"fsdp\", {n}), "
                         "(\"tensor\", 1))'")
  raise PlanDoesNotFit(f"{head}; use fsdp >= {n} (at least {n} devices){then}")
