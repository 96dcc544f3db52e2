"""Param paths as "/"-joined strings ("img/blocks/attn/q_proj/kernel"), and which leaves are stacked.

A *stacked* leaf carries a leading layer axis: the ViT's `blocks` and every decoder segment
(`segments/<name>/...`). Partition and sharding rules are written against these path strings.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import jax

_STACKED = re.compile(r"(.*/)?(blocks|segments/[^/]+)/.+")


def path_str(keypath) -> str:
  """Joins the dict keys of a jax key path with "/"; attribute keys (the fields of a
  `partition.Sliced` node) are skipped, so both halves of a split leaf share its param path."""
  parts = []
  for k in keypath:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
  return "/".join(parts)


def is_stacked(path: str) -> bool:
  """Whether the leaf at `path` has a leading layer axis."""
  return _STACKED.fullmatch(path) is not None


def leaves_with_paths(tree) -> list[tuple[str, Any]]:
  """[(path string, leaf)] in tree order."""
  return [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def map_with_paths(fn: Callable[[str, Any], Any], tree, *rest):
  """jax.tree.map with the leaf's path string as the first argument."""
  return jax.tree_util.tree_map_with_path(lambda p, x, *r: fn(path_str(p), x, *r), tree, *rest)
