"""A seeded, download-free text-only chat set (chat JSONL) for translator training.

Conversations of 1-3 exchanges about arithmetic, word problems, word manipulation, lists, units,
the calendar, comparisons and the shapes world (facts and text-described scenes, which rehearse the
image set's question types in words), with varied phrasings. Conversation i of split s depends
only on (seed, s, i), so the same seed gives identical JSONL.

Layout: out_dir/{split}.jsonl ({"id", "topic", "messages"} per line), out_dir/metadata.json.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Callable

import numpy as np

from graft_jax.data.synthetic_shapes import COLORS, PLURALS, SHAPES

DEFAULT_SPLITS = {"train": 4000, "val": 200}
WORDS = ("apple", "garden", "river", "window", "pencil", "guitar", "planet", "rabbit", "yellow", "bridge",
         "candle", "forest", "kitten", "ladder", "marble", "orange", "pocket", "rocket", "silver", "tunnel",
         "button", "dragon", "flower", "hammer", "island", "jacket", "lemon", "mirror", "needle", "puzzle")
NAMES = ("Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira", "Leo")
ITEMS = ("apples", "books", "marbles", "cookies", "stickers", "pencils", "shells", "cards")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6, "octagon": 8}
MIXES = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple",
         ("red", "white"): "pink", ("black", "white"): "gray"}
OPENERS = ("", "", "", "Quick question: ", "Hi! ", "Can you help me? ", "I was wondering: ")
Exchange = tuple[str, str]


def _pick(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def _ask(rng: np.random.Generator, question: str) -> str:
  opener = _pick(rng, OPENERS)
  proper = question.split(maxsplit=1)[0] in NAMES
  return opener + (question[0].lower() + question[1:] if opener.endswith(": ") and not proper else question)


def _arithmetic(rng: np.random.Generator) -> list[Exchange]:
  a, b = (int(v) for v in rng.integers(2, 100, size=2))
  op = _pick(rng, ("plus", "minus", "times"))
  result = {"plus": a + b, "minus": a - b, "times": a * b}[op]
  sym = {"plus": "+", "minus": "-", "times": "*"}[op]
  q = _pick(rng, (f"What is {a} {op} {b}?", f"Can you compute {a} {sym} {b}?", f"Calculate {a} {op} {b}, please."))
  ans = _pick(rng, (f"{a} {op} {b} is {result}.", f"{a} {sym} {b} = {result}.", f"The answer is {result}."))
  if rng.integers(3):
    return [(q, ans)]
  k = int(rng.integers(2, 6))
  return [(q, ans), (_pick(rng, (f"And if you multiply that by {k}?", f"Now multiply the result by {k}.")),
                     f"{result} times {k} is {result * k}.")]


def _word_problem(rng: np.random.Generator) -> list[Exchange]:
  name, item = _pick(rng, NAMES), _pick(rng, ITEMS)
  a, b = int(rng.integers(3, 20)), int(rng.integers(1, 10))
  if rng.integers(2):
    return [(f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
             f"{name} has {a + b} {item} now, because {a} + {b} = {a + b}.")]
  b = min(b, a - 1)
  return [(f"{name} had {a} {item} and gave {b} away. How many are left?",
           f"{a - b} {item} are left: {a} - {b} = {a - b}.")]


def _word_game(rng: np.random.Generator) -> list[Exchange]:
  w = _pick(rng, WORDS)
  task = int(rng.integers(5))
  if task == 0:
    return [(_pick(rng, (f"Spell the word \"{w}\" backwards.", f"What is \"{w}\" reversed?")),
             f"\"{w}\" reversed is \"{w[::-1]}\".")]
  if task == 1:
    return [(f"How many letters are in the word \"{w}\"?", f"The word \"{w}\" has {len(w)} letters.")]
  if task == 2:
    return [(f"Spell \"{w}\" letter by letter.", "-".join(w.upper()) + ".")]
  if task == 3:
    vowels = sum(c in "aeiou" for c in w)
    return [(f"How many vowels does \"{w}\" contain?", f"\"{w}\" contains {vowels} vowel{'s' * (vowels != 1)}.")]
  return [(f"What are the first and last letters of \"{w}\"?", f"It starts with \"{w[0]}\" and ends with \"{w[-1]}\".")]


def _lists(rng: np.random.Generator) -> list[Exchange]:
  nums = [int(v) for v in rng.integers(1, 60, size=int(rng.integers(3, 7)))]
  shown = ", ".join(map(str, nums))
  task = int(rng.integers(4))
  if task == 0:
    return [(f"Sort these numbers from smallest to largest: {shown}.", ", ".join(map(str, sorted(nums))) + ".")]
  if task == 1:
    return [(f"Which is the largest number in this list: {shown}?", f"The largest is {max(nums)}."),
            ("And the smallest?", f"The smallest is {min(nums)}.")]
  if task == 2:
    return [(f"Add up these numbers: {shown}.", f"Their sum is {sum(nums)}.")]
  words = sorted(set(str(w) for w in rng.choice(WORDS, size=4, replace=False)))
  shuffled = [str(w) for w in rng.permutation(words)]
  return [(f"Put these words in alphabetical order: {', '.join(shuffled)}.",
           "In alphabetical order: " + ", ".join(words) + ".")]


def _units(rng: np.random.Generator) -> list[Exchange]:
  n = int(rng.integers(2, 30))
  unit, small, factor = _pick(rng, (("minutes", "seconds", 60), ("hours", "minutes", 60), ("meters", "centimeters", 100),
                                    ("kilograms", "grams", 1000), ("days", "hours", 24)))
  return [(f"How many {small} are there in {n} {unit}?", f"There are {n * factor} {small} in {n} {unit}.")]


def _calendar(rng: np.random.Generator) -> list[Exchange]:
  d, k = int(rng.integers(7)), int(rng.integers(1, 10))
  return [(f"If today is {DAYS[d]}, what day will it be in {k} day{'s' * (k != 1)}?",
           f"It will be {DAYS[(d + k) % 7]}.")]


def _compare(rng: np.random.Generator) -> list[Exchange]:
  a, b = (int(v) for v in rng.choice(np.arange(1, 1000), size=2, replace=False))
  if rng.integers(2):
    return [(f"Which is bigger, {a} or {b}?", f"{max(a, b)} is bigger than {min(a, b)}.")]
  return [(f"Is {a} an even number?", f"{'Yes' if a % 2 == 0 else 'No'}, {a} is {'even' if a % 2 == 0 else 'odd'}.")]


def _shape_facts(rng: np.random.Generator) -> list[Exchange]:
  task = int(rng.integers(3))
  if task == 0:
    shape = _pick(rng, tuple(SIDES))
    return [(f"How many sides does a {shape} have?", f"A {shape} has {SIDES[shape]} sides.")]
  if task == 1:
    (c1, c2), mixed = _pick(rng, tuple(MIXES.items()))
    return [(f"What color do you get when you mix {c1} and {c2}?", f"Mixing {c1} and {c2} gives {mixed}.")]
  return [("Which of these shapes has no corners: a square, a circle or a triangle?", "A circle has no corners.")]


def _shape_scene(rng: np.random.Generator) -> list[Exchange]:
  n = int(rng.integers(1, 5))
  objs = [(_pick(rng, tuple(COLORS)), _pick(rng, SHAPES)) for _ in range(n)]
  scene = ", ".join(f"a {c} {s}" for c, s in objs[:-1]) + (" and " if n > 1 else "") + f"a {objs[-1][0]} {objs[-1][1]}"
  intro = f"Imagine a picture with {scene}."
  c, s = objs[int(rng.integers(n))]
  task = int(rng.integers(3))
  if task == 0:
    return [(f"{intro} How many shapes are in it?", f"There {'is' if n == 1 else 'are'} {n} shape{'s' * (n != 1)}.")]
  if task == 1:
    count = sum(o[1] == s for o in objs)
    return [(f"{intro} How many {PLURALS[s]} are there?", f"There {'is' if count == 1 else 'are'} {count}.")]
  absent = _pick(rng, [f"{c2} {s2}" for c2 in COLORS for s2 in SHAPES if (c2, s2) not in objs])
  asked = f"{c} {s}" if rng.integers(2) else absent
  return [(f"{intro} Is there a {asked} in it?", "Yes." if asked == f"{c} {s}" else "No.")]


def _small_talk(rng: np.random.Generator) -> list[Exchange]:
  return [_pick(rng, (("Hello!", "Hello! How can I help you today?"),
                      ("Thanks for your help.", "You're welcome! Let me know if you need anything else."),
                      ("Can you answer short questions?", "Yes, ask me anything and I will answer briefly.")))]


TOPICS: dict[str, Callable[[np.random.Generator], list[Exchange]]] = {
    "arithmetic": _arithmetic, "word_problem": _word_problem, "word_game": _word_game, "lists": _lists,
    "units": _units, "calendar": _calendar, "compare": _compare, "shape_facts": _shape_facts,
    "shape_scene": _shape_scene, "small_talk": _small_talk,
}


def make_chat(seed: int, split_index: int, index: int) -> dict[str, Any]:
  """Conversation `index` of split number `split_index`: {"topic", "messages"}."""
  rng = np.random.default_rng([seed, split_index, index])
  names = list(TOPICS)
  topics = [names[int(rng.integers(len(names)))] for _ in range(1 + int(rng.integers(3) == 0) + int(rng.integers(5) == 0))]
  messages = []
  for t, topic in enumerate(topics):
    for e, (user, assistant) in enumerate(TOPICS[topic](rng)):
      messages.append({"role": "user", "content": _ask(rng, user) if t == 0 and e == 0 else user})
      messages.append({"role": "assistant", "content": assistant})
  return {"topic": topics[0], "messages": messages}


def generate_text_dataset(out_dir: str, seed: int = 0, splits: dict[str, int] | None = None) -> dict[str, Any]:
  """Writes out_dir/{split}.jsonl and metadata.json; returns the metadata."""
  splits = dict(DEFAULT_SPLITS if splits is None else splits)
  os.makedirs(out_dir, exist_ok=True)
  meta: dict[str, Any] = {"seed": seed, "topics": list(TOPICS), "splits": {}}
  for split_index, (split, n) in enumerate(splits.items()):
    chats = [{"id": f"{split}_{i:06d}", **make_chat(seed, split_index, i)} for i in range(n)]
    with open(os.path.join(out_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(c) + "\n" for c in chats)
    meta["splits"][split] = {"samples": n, "topics": dict(collections.Counter(c["topic"] for c in chats)),
                             "turns": sum(len(c["messages"]) // 2 for c in chats)}
  with open(os.path.join(out_dir, "metadata.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return meta
