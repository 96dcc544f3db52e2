"""Compare a params tree with the shapes a model expects, naming every difference."""
from __future__ import annotations

import jax


def _paths(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(x.shape) for p, x in flat}


def tree_differences(got, expected) -> list[str]:
  """Human-readable differences (missing, unexpected, mis-shaped leaves) between two trees."""
  g, e = _paths(got), _paths(expected)
  out = [f"missing {p} {e[p]}" for p in sorted(set(e) - set(g))]
  out += [f"unexpected {p} {g[p]}" for p in sorted(set(g) - set(e))]
  out += [f"{p}: shape {g[p]} != expected {e[p]}" for p in sorted(set(g) & set(e)) if g[p] != e[p]]
  return out


def check_tree(got, expected, what: str) -> None:
  """Raises ValueError listing every difference (up to 10) between `got` and `expected`."""
  diffs = tree_differences(got, expected)
  if diffs:
    more = f" ... ({len(diffs)} differences in all)" if len(diffs) > 10 else ""
    raise ValueError(f"{what} does not match the expected tree: " + "; ".join(diffs[:10]) + more)
