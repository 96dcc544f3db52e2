"""Which parameters train: a spec of rules over param paths splits a params tree into a trainable
and a frozen tree, and `merge` puts them back together (inside jit, every step).

Spec format: a sequence of rules, each either a string or a `Rule`.

  "REGEX"        every leaf whose "/"-joined path fully matches REGEX trains, e.g. "proj/.*",
                 r"llm/segments/translator_\\d+/.*", "img/post_ln/.*"
  "REGEX[a:b]"   stacked leaves (leading layer axis: `img/blocks/...`, `llm/segments/<name>/...`)
                 matching REGEX train only layers a:b of that axis (a Python slice with step 1;
                 "img/blocks/.*[-8:]" = the encoder's last 8 layers). A trailing "[int:int]" is
                 always read as this layer slice, never as a regex character class.
  Rule(pattern, layers=(a, b))  the same as "pattern[a:b]"; `Rule.from_slice(p, slice(-8, None))`.

A leaf matched by several rules trains the union of their selections, which must be one
contiguous run of layers. A rule that matches no leaf, a layer slice on an unstacked leaf, or a
slice that selects no layer of a leaf is an error naming the rule.

`split` returns nested dicts: `trainable` holds the trainable leaves (a sliced leaf contributes
its layers a:b); `frozen` holds the rest, where a sliced leaf becomes `Sliced(before, after)`
(its layers :a and b:), so `merge` needs no spec and is a few concatenations under jit.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import struct

from graft_jax.train.paths import is_stacked, leaves_with_paths

_SLICE_SUFFIX = re.compile(r"(?P<pattern>.*)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]")

Selection = Any  # None (frozen) | "all" | (start, stop) on the layer axis


@dataclasses.dataclass(frozen=True)
class Rule:
  """Leaves whose path fully matches `pattern` train; `layers=(start, stop)` limits stacked
  leaves to those layers (Python slice semantics, negative counts from the end)."""
  pattern: str
  layers: tuple[int | None, int | None] | None = None

  @classmethod
  def from_slice(cls, pattern: str, layers: slice | None) -> "Rule":
    if layers is None:
      return cls(pattern)
    if layers.step not in (None, 1):
      raise ValueError(f"Layer slice of rule {pattern!r} must have step 1, got {layers}")
    return cls(pattern, (layers.start, layers.stop))

  def __str__(self) -> str:
    if self.layers is None:
      return self.pattern
    fmt = lambda v: "" if v is None else str(v)
    return f"{self.pattern}[{fmt(self.layers[0])}:{fmt(self.layers[1])}]"


def parse_rule(rule: str | Rule | tuple) -> Rule:
  """A string ("REGEX" or "REGEX[a:b]"), a Rule, or (pattern, slice | None)."""
  if isinstance(rule, Rule):
    parsed = rule
  elif isinstance(rule, str):
    m = _SLICE_SUFFIX.fullmatch(rule)
    if m:
      to_int = lambda s: int(s) if s else None
      parsed = Rule(m["pattern"], (to_int(m["start"]), to_int(m["stop"])))
    else:
      parsed = Rule(rule)
  elif isinstance(rule, tuple) and len(rule) == 2:
    parsed = Rule.from_slice(rule[0], rule[1])
  else:
    raise ValueError(f"A partition rule is a string, a Rule or (pattern, slice), got {rule!r}")
  try:
    re.compile(parsed.pattern)
  except re.error as e:
    raise ValueError(f"Partition rule {str(parsed)!r} is not a valid regex: {e}") from None
  return parsed


def spec_strings(spec: Sequence) -> list[str]:
  """The spec as JSON-able strings (for checkpoint metadata); `parse_rule` reads them back."""
  return [str(parse_rule(r)) for r in spec]


@struct.dataclass
class Sliced:
  """The frozen remainder of a stacked leaf whose layers a:b train: layers :a and b:."""
  before: Any
  after: Any


def select(params, spec: Sequence) -> dict[str, Selection]:
  """{param path: None | "all" | (start, stop)} for every leaf of `params`."""
  rules = [parse_rule(r) for r in spec]
  if not rules:
    raise ValueError("The partition spec is empty: nothing would train")
  compiled = [re.compile(r.pattern) for r in rules]
  used = [False] * len(rules)
  out = {}
  for path, leaf in leaves_with_paths(params):
    n = leaf.shape[0] if is_stacked(path) and len(leaf.shape) else None
    chosen = np.zeros(n or 1, bool)
    whole = False
    for i, (rule, regex) in enumerate(zip(rules, compiled)):
      if not regex.fullmatch(path):
        continue
      used[i] = True
      if rule.layers is None:
        whole = True
        continue
      if n is None:
        raise ValueError(f"Partition rule {str(rule)!r} slices layers of {path}, which has no layer axis")
      picked = list(range(n)[slice(*rule.layers)])
      if not picked:
        raise ValueError(f"Partition rule {str(rule)!r} selects no layer of {path} ({n} layers)")
      chosen[picked] = True
    if whole or chosen.all():
      out[path] = "all"
    elif not chosen.any():
      out[path] = None
    else:
      idx = np.flatnonzero(chosen)
      if idx[-1] - idx[0] + 1 != len(idx):
        raise ValueError(f"The rules select layers {idx.tolist()} of {path}: not one contiguous run")
      out[path] = (int(idx[0]), int(idx[-1]) + 1)
  unused = [str(r) for r, u in zip(rules, used) if not u]
  if unused:
    raise ValueError(f"Partition rule(s) {unused} match no parameter")
  return out


def split(params: Mapping, spec: Sequence) -> tuple[dict, dict]:
  """(trainable, frozen) nested dicts; see the module docstring. Traceable (static slices), so
  `jax.eval_shape(lambda p: split(p, spec), abstract_params)` gives their shapes."""
  selection = select(params, spec)

  def walk(tree, path):
    if isinstance(tree, Mapping):
      trainable, frozen = {}, {}
      for key, value in tree.items():
        t, f = walk(value, f"{path}/{key}" if path else str(key))
        if t is not None:
          trainable[key] = t
        if f is not None:
          frozen[key] = f
      return trainable or None, frozen or None
    s = selection[path]
    if s is None:
      return None, tree
    if s == "all":
      return tree, None
    a, b = s
    return tree[a:b], Sliced(tree[:a], tree[b:])

  trainable, frozen = walk(params, "")
  return trainable or {}, frozen or {}


def merge(trainable: Mapping, frozen: Mapping) -> dict:
  """The params tree back from `split`'s halves (jit-friendly: concatenation on the layer axis)."""
  if isinstance(frozen, Sliced):
    return jnp.concatenate([frozen.before, trainable, frozen.after], axis=0)
  if not (isinstance(trainable, Mapping) and isinstance(frozen, Mapping)):
    raise ValueError("merge: a leaf is present in both the trainable and the frozen tree")
  out = {}
  for key in list(frozen) + [k for k in trainable if k not in frozen]:
    if key in trainable and key in frozen:
      out[key] = merge(trainable[key], frozen[key])
    else:
      out[key] = trainable[key] if key in trainable else frozen[key]
  return out


def describe(params: Mapping, spec: Sequence) -> str:
  """A table of trainable / frozen parameter counts per top-level subtree, and the rules."""
  selection = select(params, spec)
  counts: dict[str, list[int]] = {}
  for path, leaf in leaves_with_paths(params):
    size = int(np.prod(leaf.shape))
    s = selection[path]
    trained = 0 if s is None else size if s == "all" else size // leaf.shape[0] * (s[1] - s[0])
    row = counts.setdefault(path.split("/")[0], [0, 0])
    row[0] += trained
    row[1] += size - trained
  total = [sum(r[0] for r in counts.values()), sum(r[1] for r in counts.values())]
  lines = [f"{'subtree':<10}{'trainable':>15}{'frozen':>15}{'trainable %':>13}"]
  for name, (t, f) in [*counts.items(), ("total", total)]:
    lines.append(f"{name:<10}{t:>15,}{f:>15,}{100 * t / max(t + f, 1):>12.2f}%")
  lines.append("rules: " + ", ".join(spec_strings(spec)))
  return "\n".join(lines)
