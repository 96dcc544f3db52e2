"""Chat templates and loss masks, token by token (SmolLM2 tokenizer; Llama-3 markers added to a copy)."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.data.errors import SampleError, SequenceTooLongError
from graft_jax.data.image_prompts import IMAGE_PROMPTS, pick_image_prompt
from graft_jax.data.templates import (CHATML, LLAMA3, ChatTemplate, ConversationError, encode_conversation,
                                      expand_image_slot, split_image_turn)

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
IMG = ("[IMG]", False)


@pytest.fixture(scope="session")
def smol():
  return load_tokenizer()


@pytest.fixture(scope="session")
def llama_tok(smol):
  tok = copy.deepcopy(smol)  # never mutate the cached tokenizer
  tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
  return tok


def layout(tok, sample):
  """[(token text, supervised)], with IMG where the image embeddings go."""
  out = [(tok.decode([int(i)]), bool(m)) for i, m in zip(sample.ids, sample.loss_mask)]
  if sample.has_image:
    out.insert(sample.image_pos, IMG)
  return out


def user(text):
  return {"role": "user", "content": text}


def assistant(text):
  return {"role": "assistant", "content": text}


SIMPLE = [user("Hello"), assistant("Red.")]
# Multi-turn, the image in the second user turn, marker after the question.
MULTI = [user("Hi"), assistant("Hello."), user("What color is it?\n<image>"), assistant("Red.")]


def test_chatml_markers_token_by_token(smol):
  s = encode_conversation(SIMPLE, smol, CHATML, "markers")
  assert s.ids.dtype == np.int32 and s.loss_mask.dtype == bool and s.image_pos == -1
  assert s.ids.tolist() == [1, 4093, 198, 19556, 2, 198, 1, 520, 9531, 198, 12869, 30, 2, 198]
  assert layout(smol, s) == [
      ("<|im_start|>", True), ("user", False), ("\n", False), ("Hello", False), ("<|im_end|>", True), ("\n", True),
      ("<|im_start|>", True), ("ass", False), ("istant", False), ("\n", True), ("Red", True), (".", True),
      ("<|im_end|>", True), ("\n", True)]


def test_chatml_standard_token_by_token(smol):
  s = encode_conversation(SIMPLE, smol, "chatml", "standard")
  assert s.ids.tolist() == [1, 4093, 198, 19556, 2, 198, 1, 520, 9531, 198, 12869, 30, 2, 198]
  assert s.loss_mask.tolist() == [False] * 9 + [True] * 4 + [False]


def test_chatml_multi_turn_image_in_later_turn(smol):
  for mode, marker, answer in (("markers", True, True), ("standard", False, True)):
    s = encode_conversation(MULTI, smol, CHATML, mode)
    m, a = marker, answer
    assert layout(smol, s) == [
        ("<|im_start|>", m), ("user", False), ("\n", False), ("Hi", False), ("<|im_end|>", m), ("\n", m),
        ("<|im_start|>", m), ("ass", False), ("istant", False), ("\n", a), ("Hello", a), (".", a),
        ("<|im_end|>", a), ("\n", m),
        ("<|im_start|>", m), ("user", False), ("\n", False),
        ("Here", False), (" is", False), (" a", False), (" picture", False), (" of", False), IMG,
        (",", False), (" what", False), (" color", False), (" is", False), (" it", False), ("?", False),
        ("<|im_end|>", m), ("\n", m),
        ("<|im_start|>", m), ("ass", False), ("istant", False), ("\n", a), ("Red", a), (".", a),
        ("<|im_end|>", a), ("\n", m)], mode


def test_llama3_markers_token_by_token(llama_tok):
  s = encode_conversation(MULTI, llama_tok, LLAMA3, "markers")
  bos, sh, eh, eot = llama_tok.convert_tokens_to_ids(LLAMA3_SPECIALS)
  assert s.ids.tolist()[:7] == [bos, sh, 4093, eh, 198, 26843, eot]
  assert layout(llama_tok, s) == [
      ("<|begin_of_text|>", False),
      ("<|start_header_id|>", True), ("user", False), ("<|end_header_id|>", True), ("\n", False), ("Hi", False),
      ("<|eot_id|>", True),
      ("<|start_header_id|>", True), ("ass", False), ("istant", False), ("<|end_header_id|>", True), ("\n", True),
      ("Hello", True), (".", True), ("<|eot_id|>", True),
      ("<|start_header_id|>", True), ("user", False), ("<|end_header_id|>", True), ("\n", False),
      ("Here", False), (" is", False), (" a", False), (" picture", False), (" of", False), IMG,
      (",", False), (" what", False), (" color", False), (" is", False), (" it", False), ("?", False),
      ("<|eot_id|>", True),
      ("<|start_header_id|>", True), ("ass", False), ("istant", False), ("<|end_header_id|>", True), ("\n", True),
      ("Red", True), (".", True), ("<|eot_id|>", True)]


def test_llama3_standard_supervises_only_answers(llama_tok):
  s = encode_conversation(MULTI, llama_tok, LLAMA3, "standard")
  markers = encode_conversation(MULTI, llama_tok, LLAMA3, "markers")
  tokens = layout(llama_tok, s)
  assert s.ids.tolist() == markers.ids.tolist() and s.image_pos == markers.image_pos == 24
  # Token indices as listed in test_llama3_markers_token_by_token (IMG at 24).
  assert [i for i, (_, m) in enumerate(tokens) if m] == [11, 12, 13, 14, 36, 37, 38, 39]
  assert [t for t, m in tokens if m] == ["\n", "Hello", ".", "<|eot_id|>", "\n", "Red", ".", "<|eot_id|>"]


def test_same_tokens_as_the_rendered_string(smol, llama_tok):
  conv = [user("  What is 2 + 2?\n"), assistant("4, of course!"), user("And 3 * (4 + 1)?"), assistant("It is 15.")]
  chatml = encode_conversation(conv, smol, CHATML, "standard")
  text = "".join(f"<|im_start|>{t['role']}\n{t['content'].strip()}<|im_end|>\n" for t in conv)
  assert chatml.ids.tolist() == smol.encode(text, add_special_tokens=False)
  llama = encode_conversation(conv, llama_tok, LLAMA3, "standard")
  text = "<|begin_of_text|>" + "".join(
      f"<|start_header_id|>{t['role']}<|end_header_id|>\n{t['content'].strip()}<|eot_id|>" for t in conv)
  assert llama.ids.tolist() == llama_tok.encode(text, add_special_tokens=False)


def test_chatml_matches_smollm2_own_template_minus_system_turn(smol):
  conv = [user("Name a fruit."), assistant("An apple."), user("Another one?"), assistant("A pear.")]
  system = [{"role": "system", "content": "S"}]
  full = smol.apply_chat_template(system + conv, tokenize=True)
  full = full["input_ids"] if isinstance(full, dict) or hasattr(full, "keys") else full
  prefix = smol.encode("<|im_start|>system\nS<|im_end|>\n", add_special_tokens=False)
  assert full[:len(prefix)] == prefix
  assert encode_conversation(conv, smol, CHATML, "markers").ids.tolist() == full[len(prefix):]


def test_generation_prompt(smol, llama_tok):
  s = encode_conversation([user("<image> Describe it.")], smol, CHATML, "markers", add_generation_prompt=True)
  assert layout(smol, s)[-6:] == [("<|im_end|>", True), ("\n", True), ("<|im_start|>", False), ("ass", False),
                                  ("istant", False), ("\n", False)]
  s = encode_conversation([user("Hi")], llama_tok, LLAMA3, "standard", add_generation_prompt=True)
  assert [t for t, _ in layout(llama_tok, s)][-5:] == ["<|start_header_id|>", "ass", "istant", "<|end_header_id|>", "\n"]
  assert s.num_supervised == 0


@pytest.mark.parametrize("content, after", [
    ("<image>\nWhat color is the circle?", ", what color is the circle?"),
    ("What color is the circle?\n<image>", ", what color is the circle?"),
    ("  <image>  Where is it? ", ", where is it?"),
    ("Compare <image> with a square.", ", compare with a square."),
    ("Line one.\n<image>\nLine two.", ", line one.\nLine two."),
    ("<image>\nTV screens: how many?", ", TV screens: how many?"),
    ("<image>\nI see a star. Which color?", ", I see a star. Which color?"),
    ("<image>", ""),
    ("\n<image>\n", ""),
])
def test_split_image_turn(content, after):
  assert split_image_turn(content, "Here is a picture of") == ("Here is a picture of", after)


def test_image_only_user_turn(smol):
  s = encode_conversation([user("<image>"), assistant("A red circle.")], smol, CHATML, "markers")
  tokens = layout(smol, s)
  assert tokens[3:10] == [("Here", False), (" is", False), (" a", False), (" picture", False), (" of", False), IMG,
                          ("<|im_end|>", True)]


def test_image_prompts():
  assert len(IMAGE_PROMPTS) == 30 and len(set(IMAGE_PROMPTS)) == 30
  assert all(p == p.strip() and p for p in IMAGE_PROMPTS)
  assert pick_image_prompt(None) == IMAGE_PROMPTS[0]
  draws = [pick_image_prompt(np.random.default_rng(7)) for _ in range(3)]
  assert len(set(draws)) == 1  # same seed, same draw
  rng = np.random.default_rng(0)
  assert len({pick_image_prompt(rng) for _ in range(300)}) == 30
  a, b = random.Random(3), random.Random(3)
  assert [pick_image_prompt(a) for _ in range(20)] == [pick_image_prompt(b) for _ in range(20)]


def test_training_prompts_are_random_and_seeded(smol):
  conv = [user("<image>\nWhat is this?"), assistant("A star.")]
  eval_ids = encode_conversation(conv, smol, CHATML, "markers").ids.tolist()
  assert eval_ids == encode_conversation(conv, smol, CHATML, "markers").ids.tolist()
  run = lambda seed: [encode_conversation(conv, smol, CHATML, "markers", image_prompt_rng=rng).ids.tolist()
                      for rng in [np.random.default_rng(seed)] for _ in range(10)]
  assert run(1) == run(1)
  assert len({tuple(x) for x in run(1)}) > 1
  # Text-only samples ignore the rng.
  text = [user("Hi"), assistant("Hello.")]
  assert (encode_conversation(text, smol, CHATML, "markers", image_prompt_rng=np.random.default_rng(5)).ids.tolist()
          == encode_conversation(text, smol, CHATML, "markers").ids.tolist())


@pytest.mark.parametrize("conv, reason", [
    ([], "empty_conversation"),
    ([{"role": "user"}], "bad_turn"),
    (["hello"], "bad_turn"),
    ([user("Hi"), {"role": "assistant", "content": 3}], "bad_turn"),
    ([{"role": "system", "content": "Be nice."}, user("Hi"), assistant("Yo.")], "unknown_role"),
    ([assistant("Hi"), user("Hello")], "not_user_first"),
    ([user("Hi"), user("Hi again"), assistant("Yo.")], "not_alternating"),
    ([user("Hi"), assistant("Yo."), assistant("Yo again.")], "not_alternating"),
    ([user("Hi"), assistant("Yo."), user("Bye")], "ends_with_user"),
    ([user("<image> <image> Which?"), assistant("Left.")], "multiple_image_markers"),
    ([user("<image> One?"), assistant("Yes."), user("<image> Two?"), assistant("No.")], "multiple_image_markers"),
    ([user("Draw."), assistant("<image>")], "marker_in_assistant_turn"),
    ([user("   "), assistant("Yo.")], "empty_turn"),
    ([user("Hi"), assistant("\n")], "empty_turn"),
    ([user("Hi<|im_end|>"), assistant("Yo.")], "special_token_in_content"),
    ([user("Hi"), assistant("Yo.<|endoftext|>")], "special_token_in_content"),
])
def test_bad_conversations(smol, conv, reason):
  with pytest.raises(ConversationError) as e:
    encode_conversation(conv, smol, CHATML, "markers")
  assert e.value.reason == reason and isinstance(e.value, SampleError)


def test_generation_prompt_needs_a_final_user_turn(smol):
  with pytest.raises(ConversationError) as e:
    encode_conversation(SIMPLE, smol, CHATML, "markers", add_generation_prompt=True)
  assert e.value.reason == "ends_with_assistant"


def test_bad_options(smol, llama_tok):
  with pytest.raises(ValueError, match="mode"):
    encode_conversation(SIMPLE, smol, CHATML, "everything")
  with pytest.raises(ValueError, match="Unknown chat template 'gemma'"):
    encode_conversation(SIMPLE, smol, "gemma", "markers")
  with pytest.raises(ValueError, match="<\\|begin_of_text\\|>"):  # the Llama-3 markup on a ChatML tokenizer
    encode_conversation(SIMPLE, smol, LLAMA3, "markers")
  with pytest.raises(ValueError, match="<\\|nope\\|>"):
    encode_conversation(SIMPLE, llama_tok, ChatTemplate("x", turn_start="<|im_start|>", turn_end="<|nope|>"), "markers")


def test_max_len_counts_image_embeddings_and_never_truncates(smol):
  conv = [user("<image>\nWhat is it?"), assistant("A red circle.")]
  n = len(encode_conversation(conv, smol, CHATML, "markers").ids)
  s = encode_conversation(conv, smol, CHATML, "markers", max_len=n + 579, image_len=579)
  assert s.total_len(579) == n + 579
  with pytest.raises(SequenceTooLongError) as e:
    encode_conversation(conv, smol, CHATML, "markers", max_len=n + 578, image_len=579)
  assert (e.value.length, e.value.limit, e.value.reason) == (n + 579, n + 578, "too_long")
  assert str(n + 579) in str(e.value) and f"max_len={n + 578}" in str(e.value)
  # A text-only sample carries no image embeddings whatever image_len is.
  t = encode_conversation(SIMPLE, smol, CHATML, "markers", max_len=14, image_len=579)
  assert t.total_len(579) == 14
  with pytest.raises(SequenceTooLongError, match="14 tokens exceeds max_len=13"):
    encode_conversation(SIMPLE, smol, CHATML, "markers", max_len=13, image_len=579)


def test_expand_image_slot(smol):
  s = encode_conversation(MULTI, smol, CHATML, "markers")
  ids, mask, image_mask = expand_image_slot(s, 5, pad_id=0)
  p = s.image_pos
  assert len(ids) == len(mask) == len(image_mask) == len(s.ids) + 5
  assert ids[:p].tolist() == s.ids[:p].tolist() and ids[p + 5:].tolist() == s.ids[p:].tolist()
  assert ids[p:p + 5].tolist() == [0] * 5 and not mask[p:p + 5].any()
  assert mask[:p].tolist() == s.loss_mask[:p].tolist() and mask[p + 5:].tolist() == s.loss_mask[p:].tolist()
  assert np.flatnonzero(image_mask).tolist() == list(range(p, p + 5))
  t = encode_conversation(SIMPLE, smol, CHATML, "markers")
  ids, mask, image_mask = expand_image_slot(t, 5)
  assert ids.tolist() == t.ids.tolist() and mask.tolist() == t.loss_mask.tolist() and not image_mask.any()
