"""Chat templates and loss masks: one conversation -> token ids, loss mask and image slot.

Every turn has the same layout; a `ChatTemplate` names its pieces:

  [turn_start] role [header_end] "\\n" content [turn_end] turn_suffix

  Llama-3: <|begin_of_text|> then per turn  <|start_header_id|>user<|end_header_id|>\\n...<|eot_id|>
  ChatML:  (no BOS)           per turn       <|im_start|>user\\n...<|im_end|>\\n

`loss_mask[t]` True means ids[t] is a training target, predicted from position t-1:

  piece          markers: user  assistant   standard: user  assistant
  BOS                     -       -                   -       -
  turn_start              x       x                   -       -
  role word               -       -                   -       -
  header_end              x       x                   -       -
  "\\n"                    -       x                   -       x
  content                 -       x                   -       x
  turn_end                x       x                   -       x
  turn_suffix             x       x                   -       -

"markers" is stages 1-2, "standard" is stage 3 and text-only training (method.md section 5).

ChatML has no end-of-header token, so its markers are `<|im_start|>` (start), `<|im_end|>` (end of
turn) and the "\\n" after `<|im_end|>`. The "\\n" after the role word is the header/content
newline, treated as Llama-3's: supervised in assistant turns only. The "\\n" after `<|im_end|>` is
part of the end-of-turn markup: "markers" supervises it (it is fixed markup, and it keeps the count
of supervised marker tokens equal to Llama-3's: 3 per user turn, 4 + response per assistant turn);
"standard" does not, since generation stops at `<|im_end|>` and that mode teaches only what the
assistant generates.

Image slot: a user turn holding the `<image>` marker becomes `{image prompt}{IMAGE}, {question}`.
`ids` hold NO placeholder for the image; `image_pos` is the index in `ids` before which the
image's embeddings (start-of-image, N tokens, end-of-image) are inserted, -1 without an image.
Splicing with N' = N + 2 embeddings gives positions j < p: text j; p <= j < p + N': image j - p;
j >= p + N': text j - N'. `expand_image_slot` builds that full layout host-side (pad ids and
mask False in the slot), so a fixed-shape batch needs one `dynamic_update_slice` per row on device
and no vocabulary id is reserved for a placeholder.

Tokenisation is piecewise (special tokens by id, each text piece on its own), which makes segment
boundaries exact. Contents are stripped of surrounding whitespace (as Llama-3's official template
does), so the pieces tokenise exactly as the rendered string would (tested).
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re
from typing import Any, Sequence

import numpy as np

from graft_jax.data.errors import SampleError, SequenceTooLongError
from graft_jax.data.image_prompts import pick_image_prompt

IMAGE_MARKER = "<image>"
MODES = ("markers", "standard")
ROLES = ("user", "assistant")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A chat family's turn markup. Special-token fields are token strings, resolved per tokenizer."""
  name: str
  turn_start: str
  turn_end: str
  bos: str | None = None
  header_end: str | None = None
  header_sep: str = "\n"
  turn_suffix: str = ""


LLAMA3 = ChatTemplate("llama3", turn_start="<|start_header_id|>", turn_end="<|eot_id|>",
                      bos="<|begin_of_text|>", header_end="<|end_header_id|>")
CHATML = ChatTemplate("chatml", turn_start="<|im_start|>", turn_end="<|im_end|>", turn_suffix="\n")
TEMPLATES = {t.name: t for t in (LLAMA3, CHATML)}


def get_template(name: str) -> ChatTemplate:
  if name not in TEMPLATES:
    raise ValueError(f"Unknown chat template {name!r}; known: {sorted(TEMPLATES)}")
  return TEMPLATES[name]


@dataclasses.dataclass(frozen=True)
class EncodedSample:
  """ids: int32[T] (no image placeholder); loss_mask: bool[T] (ids[t] is a target);
  image_pos: index in ids before which the image embeddings go, -1 for a text-only sample."""
  ids: np.ndarray
  loss_mask: np.ndarray
  image_pos: int = -1

  @property
  def has_image(self) -> bool:
    return self.image_pos >= 0

  @property
  def num_supervised(self) -> int:
    return int(self.loss_mask.sum())

  def total_len(self, image_len: int) -> int:
    """Length after splicing `image_len` image embeddings into the slot."""
    return len(self.ids) + (image_len if self.has_image else 0)


class ConversationError(SampleError):
  """A conversation the templates cannot encode (roles, markers, empty turns)."""


def check_conversation(conversation: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> int:
  """Validates roles, order and `<image>` markers; returns the index of the image turn or -1.

  Raises ConversationError (reason: empty_conversation, bad_turn, unknown_role, not_user_first,
  not_alternating, ends_with_user, ends_with_assistant, empty_turn, multiple_image_markers,
  marker_in_assistant_turn).
  """
  if not conversation:
    raise ConversationError("empty_conversation", "the conversation has no turns")
  image_turn = -1
  for i, turn in enumerate(conversation):
    if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
      raise ConversationError("bad_turn", f"turn {i} is not {{'role': str, 'content': str}}: {turn!r:.200}")
    role, content = turn["role"], turn["content"]
    if role not in ROLES:
      raise ConversationError("unknown_role", f"turn {i} has role {role!r}; only {ROLES} are supported")
    expected = ROLES[i % 2]
    if role != expected:
      reason = "not_user_first" if i == 0 else "not_alternating"
      raise ConversationError(reason, f"turn {i} is {role!r} but {expected!r} was expected (turns alternate, user first)")
    markers = content.count(IMAGE_MARKER)
    if markers and role == "assistant":
      raise ConversationError("marker_in_assistant_turn", f"turn {i} (assistant) holds an {IMAGE_MARKER} marker")
    if markers and (markers > 1 or image_turn >= 0):
      raise ConversationError("multiple_image_markers", f"more than one {IMAGE_MARKER} marker (one image per sample)")
    if markers:
      image_turn = i
    elif not content.strip():
      raise ConversationError("empty_turn", f"turn {i} ({role}) is empty")
  last = conversation[-1]["role"]
  if add_generation_prompt and last != "user":
    raise ConversationError("ends_with_assistant", "a generation prompt needs a conversation ending with a user turn")
  if not add_generation_prompt and last != "assistant":
    raise ConversationError("ends_with_user", "the last turn is a user turn with no answer to train on")
  return image_turn


def split_image_turn(content: str, image_prompt: str) -> tuple[str, str]:
  """The user text around the image slot: (`{image prompt}`, `, {question}`).

  The marker goes with the whitespace around it; text left on both sides is joined by "\\n" if
  that whitespace held one, else by a space. The question's first letter is lower-cased unless
  the first word is "I"/"I'..." or an acronym ("TV"). A turn with no question leaves "" after.
  """
  match = re.search(r"\s*" + re.escape(IMAGE_MARKER) + r"\s*", content)
  before, after = content[:match.start()].strip(), content[match.end():].strip()
  joiner = "\n" if "\n" in match.group(0) else " "
  question = joiner.join(p for p in (before, after) if p)
  if not question:
    return image_prompt, ""
  first_word = question.split(maxsplit=1)[0]
  keep_case = first_word == "I" or first_word.startswith("I'") or (len(first_word) > 1 and first_word.isupper())
  if not keep_case:
    question = question[0].lower() + question[1:]
  return image_prompt, ", " + question


@dataclasses.dataclass(frozen=True)
class _Resolved:
  bos: tuple[int, ...]
  turn_start: tuple[int, ...]
  header_end: tuple[int, ...]
  turn_end: tuple[int, ...]
  header_sep: tuple[int, ...]
  turn_suffix: tuple[int, ...]
  roles: dict[str, tuple[int, ...]]
  special_strings: tuple[str, ...]


def _special_id(tokenizer, template: ChatTemplate, token: str | None) -> tuple[int, ...]:
  if token is None:
    return ()
  ids = tokenizer.encode(token, add_special_tokens=False)
  if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != token:
    raise ValueError(f"Template {template.name!r} needs {token!r} to be one special token, but this "
                     f"tokenizer splits it into {ids}; use the template of the tokenizer's family.")
  return (ids[0],)


@functools.lru_cache(maxsize=16)
def _resolve(tokenizer, template: ChatTemplate) -> _Resolved:
  text = lambda s: tuple(tokenizer.encode(s, add_special_tokens=False))
  specials = [template.bos, template.turn_start, template.header_end, template.turn_end]
  specials += list(getattr(tokenizer, "all_special_tokens", []))
  return _Resolved(
      bos=_special_id(tokenizer, template, template.bos),
      turn_start=_special_id(tokenizer, template, template.turn_start),
      header_end=_special_id(tokenizer, template, template.header_end),
      turn_end=_special_id(tokenizer, template, template.turn_end),
      header_sep=text(template.header_sep),
      turn_suffix=text(template.turn_suffix),
      roles={role: text(role) for role in ROLES},
      special_strings=tuple(sorted({s for s in specials if s})))


def encode_conversation(
    conversation: Sequence[dict[str, Any]],
    tokenizer,
    template: ChatTemplate | str,
    mode: str,
    *,
    image_prompt_rng: np.random.Generator | random.Random | None = None,
    max_len: int | None = None,
    image_len: int = 0,
    add_generation_prompt: bool = False,
) -> EncodedSample:
  """Tokenises and masks one conversation ([{"role": "user"|"assistant", "content": str}, ...]).

  mode: "markers" or "standard" (see the module docstring). image_prompt_rng: None picks the
  first image prompt (evaluation), else one at random. max_len: limit on the full length, text
  tokens plus `image_len` embeddings for an image sample; longer raises SequenceTooLongError.
  add_generation_prompt: the conversation ends with a user turn and the assistant header
  (through its "\\n") is appended, unsupervised, for generation.
  Raises ConversationError for a conversation it cannot encode.
  """
  if isinstance(template, str):
    template = get_template(template)
  if mode not in MODES:
    raise ValueError(f"Unknown loss-mask mode {mode!r}; expected one of {MODES}")
  image_turn = check_conversation(conversation, add_generation_prompt)
  r = _resolve(tokenizer, template)

  pieces = []  # per turn: (text before the slot, text after it or None)
  for i, turn in enumerate(conversation):
    content = turn["content"]
    for special in r.special_strings:
      if special in content:
        raise ConversationError("special_token_in_content", f"turn {i} contains the special token {special!r}")
    if i == image_turn:
      pieces.append(split_image_turn(content, pick_image_prompt(image_prompt_rng)))
    else:
      pieces.append((content.strip(), None))
  flat = [text for pair in pieces for text in pair if text is not None]
  encoded = iter(tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter(())

  ids: list[int] = []
  mask: list[bool] = []

  def emit(tokens: Sequence[int], supervised: bool) -> None:
    ids.extend(tokens)
    mask.extend([supervised] * len(tokens))

  markers = mode == "markers"
  image_pos = -1
  emit(r.bos, False)
  for turn, (_, after) in zip(conversation, pieces):
    answer = turn["role"] == "assistant"
    emit(r.turn_start, markers)
    emit(r.roles[turn["role"]], False)
    emit(r.header_end, markers)
    emit(r.header_sep, answer)
    emit(next(encoded), answer)
    if after is not None:
      image_pos = len(ids)
      emit(next(encoded), answer)
    emit(r.turn_end, markers or answer)
    emit(r.turn_suffix, markers)
  if add_generation_prompt:
    emit(r.turn_start + r.roles["assistant"] + r.header_end + r.header_sep, False)

  sample = EncodedSample(np.asarray(ids, np.int32), np.asarray(mask, bool), image_pos)
  if max_len is not None and sample.total_len(image_len) > max_len:
    detail = f" ({len(ids)} text + {image_len} image)" if sample.has_image else ""
    raise SequenceTooLongError(sample.total_len(image_len), max_len, detail)
  return sample


def expand_image_slot(sample: EncodedSample, image_len: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The sequence as the model sees it after splicing: ids int32[T'], loss_mask bool[T'],
  image_mask bool[T'] with T' = T + image_len for an image sample (pad_id and False in the slot,
  whose targets are never supervised), T' = T for a text-only one."""
  if not sample.has_image:
    return sample.ids, sample.loss_mask, np.zeros(len(sample.ids), bool)
  p = sample.image_pos
  ids = np.concatenate([sample.ids[:p], np.full(image_len, pad_id, np.int32), sample.ids[p:]])
  mask = np.concatenate([sample.loss_mask[:p], np.zeros(image_len, bool), sample.loss_mask[p:]])
  image_mask = np.zeros(len(ids), bool)
  image_mask[p:p + image_len] = True
  return ids, mask, image_mask
