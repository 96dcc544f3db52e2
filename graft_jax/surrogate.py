"""Surrogates of a target decoder: plans, slicing the target into a surrogate, grafting back.

A *plan* lists translator ranges [a, b] of a decoder with L layers. For each range, layers
a..a+k-1 become trainable translators (k = num_translators, initialised from those layers), layers
a+k..b are dropped; everything else is kept and frozen. Ranges must lie inside [0, L-1), so the
last layer is always kept. The surrogate's decoder is a list of segments:

  blocks_0 (0..a-1) | translator_0 (a..a+k-1) | blocks_1 (b+1..next a-1) | ... | blocks_n (..L-1)

Building a surrogate is slicing the target's stacked layer axis; embed, final norm and head are
the target's own arrays. Grafting swaps the encoder side (`img`, `proj`) into the target's tree.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax

from graft_jax.models.config import Segments

ENCODER_SIDE = ("img", "proj")  # subtrees trained against a surrogate and grafted onto the target
TARGET_SEGMENT = "blocks_0"     # the full target's single segment


class PlanError(ValueError):
  """A surrogate plan that cannot be built for the given decoder."""


@dataclasses.dataclass(frozen=True)
class TranslatorRange:
  """Layers start..end (inclusive) are replaced by translators start..start+num_translators-1."""
  start: int
  end: int
  num_translators: int = 1

  @property
  def translators(self) -> range:
    return range(self.start, self.start + self.num_translators)

  @property
  def dropped(self) -> range:
    return range(self.start + self.num_translators, self.end + 1)


def _parse_range(spec) -> TranslatorRange:
  """Accepts TranslatorRange, (a, b), (a, b, k), {"start", "end", "num_translators"}, or an explicit
  list of consecutive layer ids written as {"layers": [...], "num_translators": k}."""
  if isinstance(spec, TranslatorRange):
    return spec
  if isinstance(spec, dict):
    spec = dict(spec)
    if "layers" in spec:
      layers = [int(x) for x in spec.pop("layers")]
      if not layers or layers != list(range(layers[0], layers[0] + len(layers))):
        raise PlanError(f"Translator range layers {layers} are not consecutive ascending layer ids")
      return TranslatorRange(layers[0], layers[-1], int(spec.pop("num_translators", 1)))
    return TranslatorRange(int(spec["start"]), int(spec["end"]), int(spec.get("num_translators", 1)))
  values = [int(x) for x in spec]
  if len(values) not in (2, 3):
    raise PlanError(f"A translator range is (start, end) or (start, end, num_translators), got {spec!r}")
  return TranslatorRange(*values)


@dataclasses.dataclass(frozen=True)
class SurrogatePlan:
  """Which target layers a surrogate keeps, trains as translators, and drops."""
  num_layers: int
  ranges: tuple[TranslatorRange, ...] = ()

  @classmethod
  def create(cls, num_layers: int, ranges: Sequence = ()) -> "SurrogatePlan":
    plan = cls(int(num_layers), tuple(sorted((_parse_range(r) for r in ranges), key=lambda r: r.start)))
    plan.validate()
    return plan

  def validate(self) -> None:
    last = self.num_layers - 1
    for r in self.ranges:
      if r.start > r.end:
        raise PlanError(f"Range [{r.start}, {r.end}] is not consecutive: start > end")
      if r.start < 0 or r.end >= last:
        raise PlanError(f"Range [{r.start}, {r.end}] is outside [0, {last - 1}]: the decoder has "
                        f"{self.num_layers} layers and its last layer ({last}) is always kept")
      if not 1 <= r.num_translators <= r.end - r.start + 1:
        raise PlanError(f"num_translators={r.num_translators} must be between 1 and the length "
                        f"of range [{r.start}, {r.end}] ({r.end - r.start + 1})")
    for prev, nxt in zip(self.ranges, self.ranges[1:]):
      if nxt.start <= prev.end:
        raise PlanError(f"Ranges [{prev.start}, {prev.end}] and [{nxt.start}, {nxt.end}] overlap")

  def layout(self) -> list[tuple[str, str, list[int]]]:
    """[(segment name, "keep"|"translator", target layer ids)], in order; drops are omitted."""
    out, cursor, kept = [], 0, 0
    for i, r in enumerate(self.ranges):
      if r.start > cursor:
        out.append((f"blocks_{kept}", "keep", list(range(cursor, r.start))))
        kept += 1
      out.append((f"translator_{i}", "translator", list(r.translators)))
      cursor = r.end + 1
    out.append((f"blocks_{kept}", "keep", list(range(cursor, self.num_layers))))
    return out

  @property
  def segments(self) -> Segments:
    return tuple((name, len(layers)) for name, _, layers in self.layout())

  @property
  def translator_segments(self) -> tuple[str, ...]:
    return tuple(name for name, kind, _ in self.layout() if kind == "translator")

  @property
  def num_kept_layers(self) -> int:
    return sum(n for _, n in self.segments)

  def describe(self) -> str:
    """The reference's one-line summary, e.g. "keep 0-15, translator 16, drop 17-26, keep 27"."""
    span = lambda a, b: f"{a}" if a == b else f"{a}-{b}"
    parts, cursor = [], 0
    for r in self.ranges:
      if r.start > cursor:
        parts.append(f"keep {span(cursor, r.start - 1)}")
      parts.append(f"translator {span(r.translators[0], r.translators[-1])}")
      if len(r.dropped):
        parts.append(f"drop {span(r.dropped[0], r.dropped[-1])}")
      cursor = r.end + 1
    parts.append(f"keep {span(cursor, self.num_layers - 1)}")
    return ", ".join(parts)

  def to_dict(self) -> dict:
    """Metadata stored with every surrogate and checkpoint."""
    return {"num_layers": self.num_layers,
            "ranges": [dataclasses.asdict(r) for r in self.ranges],
            "segments": [[name, kind, layers] for name, kind, layers in self.layout()],
            "description": self.describe()}

  @classmethod
  def from_dict(cls, d: dict) -> "SurrogatePlan":
    return cls.create(d["num_layers"], [TranslatorRange(**r) for r in d["ranges"]])


def identity_plan(num_layers: int) -> SurrogatePlan:
  return SurrogatePlan.create(num_layers, ())


def _llm_tree(params: dict) -> tuple[dict, bool]:
  return (params["llm"], True) if "llm" in params else (params, False)


def make_surrogate(target_params: dict, plan: SurrogatePlan) -> dict:
  """Surrogate params from the full target's params (a decoder tree, or a VLM tree with "llm").

  The translators are copies of their source layers; embed, final norm and head are shared.
  Returns a tree of the same kind, whose decoder segments are `plan.segments`.
  """
  llm, nested = _llm_tree(target_params)
  segments = llm.get("segments", {})
  if set(segments) != {TARGET_SEGMENT}:
    raise PlanError(f"make_surrogate needs the full target (one segment {TARGET_SEGMENT!r}), "
                    f"got segments {sorted(segments)}")
  depth = {x.shape[0] for x in jax.tree.leaves(segments[TARGET_SEGMENT])}
  if depth != {plan.num_layers}:
    raise PlanError(f"The plan is for {plan.num_layers} layers but the target has {sorted(depth)}")
  stacked = segments[TARGET_SEGMENT]
  new_segments = {
      name: jax.tree.map(lambda x, lo=layers[0], hi=layers[-1] + 1: x[lo:hi], stacked)
      for name, _, layers in plan.layout()}
  surrogate = {**llm, "segments": new_segments}
  return {**target_params, "llm": surrogate} if nested else surrogate


def encoder_side(params: dict) -> dict:
  """The subtrees trained against a surrogate that a graft carries over (`img`, `proj`)."""
  missing = [k for k in ENCODER_SIDE if k not in params]
  if missing:
    raise PlanError(f"No encoder side to graft: the params tree lacks {missing}")
  return {k: params[k] for k in ENCODER_SIDE}


def graft(target_params: dict, trained_params: dict) -> dict:
  """The full target's params with the encoder side taken from `trained_params` (zero-shot graft)."""
  return {**target_params, **encoder_side(trained_params)}
