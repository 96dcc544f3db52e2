"""A seeded synthetic LLaVA-format dataset: coloured shapes on plain or noisy backgrounds.

Each sample is one image (1-4 non-overlapping shapes) and one question of a type chosen in turn
from QUESTION_TYPES (or a subset given as `question_types`) (so types are balanced exactly): caption, color, shape, count, position, or
POPE-style existence ("Is there a {color} {shape} in the image?", alternating yes and no; a "no"
asks about an absent object, half the time one sharing a color or shape with a present object
("adversarial"), else any absent one ("random")). Answers are short: `answer` is machine-readable
("red", "circle", "3", "left", "yes", a caption) and the assistant says `answer.capitalize() + "."`.

Sample i of split s depends only on (seed, s, i): `np.random.default_rng([seed, s, i])`, so the
same seed gives byte-identical PNGs and JSON, and growing a split keeps its first samples.

Layout: out_dir/{split}.json (LLaVA list, plus "question_type", "answer", "pope", "objects",
"background"), out_dir/images/{split}/{index}.png, out_dir/metadata.json (seed, counts).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
QUESTION_TYPES = ("caption", "color", "shape", "count", "position", "exists")
DEFAULT_SPLITS = {"train": 2000, "val": 200, "test": 300}
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down, for anti-aliased edges


@dataclasses.dataclass(frozen=True)
class Obj:
  color: str
  shape: str
  x: float  # centre, pixels
  y: float
  size: float  # bounding-box side, pixels


def _scene(rng: np.random.Generator, image_size: int, max_objects: int) -> list[Obj] | None:
  """1..max_objects shapes whose bounding boxes don't touch; None if placement failed."""
  objects: list[Obj] = []
  for _ in range(int(rng.integers(1, max_objects + 1))):
    size = float(rng.uniform(0.2, 0.3) * image_size)
    for _ in range(50):
      x, y = (float(v) for v in rng.uniform(size / 2 + 1, image_size - size / 2 - 1, size=2))
      if all(max(abs(x - o.x), abs(y - o.y)) > (size + o.size) / 2 + 2 for o in objects):
        break
    else:
      return None
    objects.append(Obj(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)), x, y, size))
  return objects


def _outline(obj: Obj, scale: float) -> tuple[str, list[tuple[float, float]]]:
  cx, cy, r = obj.x * scale, obj.y * scale, obj.size * scale / 2
  if obj.shape in ("circle", "square"):
    return obj.shape, [(cx - r, cy - r), (cx + r, cy + r)]
  if obj.shape == "triangle":
    return "polygon", [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
  if obj.shape == "star":
    return "polygon", [(cx + (r if k % 2 == 0 else 0.45 * r) * math.sin(k * math.pi / 5),
                        cy - (r if k % 2 == 0 else 0.45 * r) * math.cos(k * math.pi / 5)) for k in range(10)]
  t = 0.35 * r  # cross: a plus sign of arm half-width t
  return "polygon", [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                     (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                     (cx - r, cy - t), (cx - t, cy - t)]


def render(objects: list[Obj], background: str, image_size: int, rng: np.random.Generator) -> Image.Image:
  """Draws `objects` on a dark gray background, "plain" or "noisy" (per-pixel uniform noise)."""
  gray = int(rng.integers(20, 90))
  bg = np.full((image_size, image_size, 3), gray, np.int16)
  if background == "noisy":
    bg += rng.integers(-30, 31, size=bg.shape, dtype=np.int16)
  canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB").convert("RGBA")
  big = image_size * _SUPERSAMPLE
  layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
  draw = ImageDraw.Draw(layer)
  for obj in objects:
    kind, points = _outline(obj, _SUPERSAMPLE)
    fill = COLORS[obj.color] + (255,)
    {"circle": draw.ellipse, "square": draw.rectangle, "polygon": draw.polygon}[kind](points, fill=fill)
  layer = layer.resize((image_size, image_size), Image.Resampling.BOX)
  return Image.alpha_composite(canvas, layer).convert("RGB")


def _name(obj: Obj) -> str:
  return f"{obj.color} {obj.shape}"


def _question(qtype: str, objects: list[Obj], rng: np.random.Generator, yes: bool,
              image_size: int) -> tuple[str, str, str | None] | None:
  """(question, answer, pope kind) about `objects`, or None if this scene can't support the type."""
  pick = lambda options: options[int(rng.integers(len(options)))]
  shapes = collections.Counter(o.shape for o in objects)
  colors = collections.Counter(o.color for o in objects)
  kinds = collections.Counter(_name(o) for o in objects)
  if qtype == "caption":
    names = [f"a {_name(o)}" for o in sorted(objects, key=lambda o: o.x)]
    caption = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return pick(["Describe the image briefly.", "What is in this picture?", "What do you see?",
                 "Give a short description of the image.", "List the shapes in the image."]), caption, None
  if qtype == "color":
    unique = [o for o in objects if shapes[o.shape] == 1]
    if not unique:
      return None
    obj = pick(unique)
    noun = pick([obj.shape, "shape"]) if len(objects) == 1 else obj.shape
    return pick([f"What color is the {noun}?", f"What is the color of the {noun}?",
                 f"Which color does the {noun} have?"]), obj.color, None
  if qtype == "shape":
    unique = [o for o in objects if colors[o.color] == 1]
    if not unique:
      return None
    obj = pick(unique)
    return pick([f"What shape is the {obj.color} object?", f"What is the shape of the {obj.color} object?",
                 f"Which shape is {obj.color}?"]), obj.shape, None
  if qtype == "count":
    variant = int(rng.integers(3))
    if variant == 0:
      return pick(["How many shapes are there?", "How many objects are in the image?",
                   "Count the shapes in the picture."]), str(len(objects)), None
    if variant == 1:
      c = pick(sorted(colors))
      return f"How many {c} shapes are there?", str(colors[c]), None
    s = pick(sorted(shapes))
    return f"How many {PLURALS[s]} are there?", str(shapes[s]), None
  if qtype == "position":
    low, high = 0.4 * image_size, 0.6 * image_size
    options = []
    for o in objects:
      if kinds[_name(o)] == 1:
        for axis, v in (("x", o.x), ("y", o.y)):
          if v < low or v > high:
            options.append((o, axis, v < low))
    if not options:
      return None
    obj, axis, first = pick(options)
    pair = ("left", "right") if axis == "x" else ("top", "bottom")
    a, b = pair if rng.integers(2) else pair[::-1]
    where = f"on the {a} or on the {b}" if axis == "x" else f"at the {a} or at the {b}"
    return f"Is the {_name(obj)} {where}?", pair[0] if first else pair[1], None
  if qtype == "exists":
    if yes:
      return f"Is there a {pick(sorted(kinds))} in the image?", "yes", "positive"
    absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in kinds]
    near = [k for k in absent if any(k.split()[0] == o.color or k.split()[1] == o.shape for o in objects)]
    kind, pool = ("adversarial", near) if rng.integers(2) else ("random", absent)
    return f"Is there a {pick(pool)} in the image?", "no", kind
  raise ValueError(f"Unknown question type {qtype!r}; known: {QUESTION_TYPES}")


def make_sample(seed: int, split_index: int, index: int, image_size: int = 64, max_objects: int = 4,
                question_types: Sequence[str] = QUESTION_TYPES, turns: int = 1) -> tuple[dict[str, Any], Image.Image]:
  """Sample `index` of split number `split_index`: (record without id/image, image). Its question
  type is question_types[index % len(question_types)].

  turns > 1 adds up to turns - 1 more question-answer turns about the same image (as LLaVA's
  instruction data has), of the types that follow in turn; a type the scene can't support is left
  out. The image, the first turn and the record's question_type / answer / pope fields are those
  of the one-turn sample; `extra_turns` lists [question_type, answer] of the others."""
  rng = np.random.default_rng([seed, split_index, index])
  qtype = question_types[index % len(question_types)]
  yes = (index // len(question_types)) % 2 == 0
  for _ in range(1000):
    objects = _scene(rng, image_size, max_objects)
    qa = objects and _question(qtype, objects, rng, yes, image_size)
    if qa:
      break
  else:
    raise RuntimeError(f"no scene supports a {qtype!r} question after 1000 tries (image_size={image_size})")
  question, answer, pope = qa
  background = "noisy" if rng.integers(2) else "plain"
  image = render(objects, background, image_size, rng)
  user = f"<image>\n{question}" if rng.integers(2) else f"{question}\n<image>"
  reply = lambda a: a[0].upper() + a[1:] + "."
  conversations = [{"from": "human", "value": user}, {"from": "gpt", "value": reply(answer)}]
  extra_turns = []
  for k in range(1, turns):
    more_type = question_types[(index + k) % len(question_types)]
    more = _question(more_type, objects, rng, bool(rng.integers(2)), image_size)
    if more:
      conversations += [{"from": "human", "value": more[0]}, {"from": "gpt", "value": reply(more[1])}]
      extra_turns.append([more_type, more[1]])
  record = {
      "conversations": conversations,
      "question_type": qtype, "answer": answer, "pope": pope, "background": background,
      "objects": [{"color": o.color, "shape": o.shape, "x": round(o.x / image_size, 4),
                   "y": round(o.y / image_size, 4), "size": round(o.size / image_size, 4)} for o in objects],
  }
  if turns > 1:
    record["extra_turns"] = extra_turns
  return record, image


def generate_shapes_dataset(out_dir: str, seed: int = 0, splits: dict[str, int] | None = None,
                            image_size: int = 64, max_objects: int = 4,
                            question_types: Sequence[str] = QUESTION_TYPES,
                            turns: dict[str, int] | None = None) -> dict[str, Any]:
  """Writes the dataset (see the module docstring) and returns its metadata. `question_types`:
  a subset of QUESTION_TYPES, taken in turn (e.g. without "caption" for a pure VQA set).
  `turns`: question-answer turns per sample of a split (default 1; see make_sample)."""
  turns = dict(turns or {})
  question_types = tuple(question_types)
  unknown = sorted(set(question_types) - set(QUESTION_TYPES))
  if unknown or not question_types:
    raise ValueError(f"question_types must be a non-empty subset of {QUESTION_TYPES}; got {question_types}")
  splits = dict(DEFAULT_SPLITS if splits is None else splits)
  meta: dict[str, Any] = {"seed": seed, "image_size": image_size, "max_objects": max_objects,
                          "colors": list(COLORS), "shapes": list(SHAPES),
                          "question_types": list(question_types), "turns": turns, "splits": {}}
  for split_index, (split, n) in enumerate(splits.items()):
    os.makedirs(os.path.join(out_dir, "images", split), exist_ok=True)
    records = []
    for i in range(n):
      record, image = make_sample(seed, split_index, i, image_size, max_objects, question_types,
                                  int(turns.get(split, 1)))
      rel = f"images/{split}/{i:06d}.png"
      image.save(os.path.join(out_dir, rel), format="PNG")
      records.append({"id": f"{split}_{i:06d}", "image": rel, **record})
    with open(os.path.join(out_dir, f"{split}.json"), "w", encoding="utf-8") as f:
      json.dump(records, f, indent=1)
    meta["splits"][split] = {
        "samples": n,
        "question_types": dict(collections.Counter(r["question_type"] for r in records)),
        "exists_answers": dict(collections.Counter(r["answer"] for r in records if r["question_type"] == "exists")),
    }
  with open(os.path.join(out_dir, "metadata.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return meta
