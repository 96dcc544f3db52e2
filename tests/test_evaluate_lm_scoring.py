"""LM scoring on a tiny random decoder with a character tokenizer, against a direct computation."""
from __future__ import annotations

import functools
import json
import math
import string

import jax
import numpy as np
import pytest

from graft_jax.data.errors import DataFormatError
from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.lm_scoring import (choice_metrics, encode_pair, multiple_choice, perplexity,
                                           score_sequences)
from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import Decoder, init_params
from graft_jax.surrogate import SurrogatePlan, make_surrogate


class CharTokenizer:
  """One token per character; ChatML's two markers as special tokens (enough for the templates)."""
  all_special_tokens = ["<pad>", "<|im_start|>", "<|im_end|>"]
  chars = "\n " + string.ascii_letters + string.digits + ".,?!'-:;()"
  bos_token_id, eos_token_id = 1, 2
  vocab_size = len(all_special_tokens) + len(chars)

  def encode(self, text, add_special_tokens=False):
    if text in self.all_special_tokens:
      return [self.all_special_tokens.index(text)]
    return [self.bos_token_id] * add_special_tokens + [3 + self.chars.index(c) for c in text]

  def __call__(self, texts, add_special_tokens=False):
    return {"input_ids": [self.encode(t, add_special_tokens) for t in texts]}

  def convert_ids_to_tokens(self, i):
    return self.all_special_tokens[i] if i < 3 else self.chars[i - 3]

  def decode(self, ids):
    return "".join(self.convert_ids_to_tokens(int(i)) for i in ids)


TOK = CharTokenizer()
CONFIG = LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=48, num_layers=4, num_heads=4,
                     num_kv_heads=2, head_dim=8, pad_token_id=0)


@pytest.fixture(scope="module")
def params():
  params = jax.jit(init_params, static_argnums=0)(CONFIG, jax.random.key(0))
  # a larger embedding makes the random model's next-token distributions peaked, not near-uniform
  params["embed"]["embedding"] = params["embed"]["embedding"] * 50
  return params


@functools.partial(jax.jit, static_argnames="segments")
def _logits(params, ids, segments=None):
  return Decoder(CONFIG, segments).apply({"params": params}, ids)[0]


def direct_logits(params, ids, segments=None):
  """float64[T, V] logits of one sequence, unmasked; zeros after it leave it alone (causality) and
  give every call the same shape, so this compiles once."""
  padded = np.zeros((1, 128), np.int32)
  padded[0, :len(ids)] = ids
  return np.asarray(_logits(params, padded, segments)[0, :len(ids)], np.float64)


def direct_logprobs(params, ids, segments=None):
  """log p(ids[t] | ids[:t]) for t >= 1, log-softmax in numpy."""
  logits = direct_logits(params, ids, segments)
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return np.array([logp[t - 1, ids[t]] for t in range(1, len(ids))])


def write(path, records):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
  return str(path)


def test_score_sequences_match_direct_and_ignore_padding(params):
  rng = np.random.default_rng(0)
  seqs = [rng.integers(3, TOK.vocab_size, n).astype(np.int32) for n in (5, 40, 9, 2, 33)]
  masks = [np.arange(len(s)) > 0 for s in seqs]
  masks[1][10:20] = False
  got = score_sequences(params, CONFIG, list(zip(seqs, masks)), batch_size=2, min_len=8)
  for s, m, g in zip(seqs, masks, got):
    np.testing.assert_allclose(g, direct_logprobs(params, s)[m[1:]], atol=2e-5)
  with pytest.raises(ValueError, match="position 0"):
    score_sequences(params, CONFIG, [(seqs[0], np.ones(5, bool))])


@pytest.mark.parametrize("cut", [None, (1, 2)])
def test_perplexity_of_text_and_chat(params, tmp_path, cut):
  plan = SurrogatePlan.create(CONFIG.num_layers, [cut]) if cut else None
  model_params, segments = (make_surrogate(params, plan), plan.segments) if plan else (params, None)
  chat = [{"role": "user", "content": "What color is it?"}, {"role": "assistant", "content": "Red."}]
  path = write(tmp_path / "ppl.jsonl", [{"text": "Hello there."}, "", {"messages": chat},
                                        {"text": "A longer line of text, to land in another bucket: " * 2}])
  metrics, per_sample = perplexity(model_params, CONFIG, TOK, path, segments=segments, template="chatml")

  text_logps = [direct_logprobs(model_params, [1] + TOK.encode(t), segments)
                for t in ("Hello there.", "A longer line of text, to land in another bucket: " * 2)]
  encoded = encode_conversation(chat, TOK, "chatml", "standard")
  chat_logp = direct_logprobs(model_params, encoded.ids, segments)[encoded.loss_mask[1:]]
  assert len(chat_logp) == 6  # "\n" + "Red." + <|im_end|>: the assistant's tokens only
  expected = [text_logps[0], chat_logp, text_logps[1]]
  assert [s["line"] for s in per_sample] == [1, 3, 4]
  assert [s["tokens"] for s in per_sample] == [len(e) for e in expected]
  for s, e in zip(per_sample, expected):
    assert s["nll"] == pytest.approx(-e.mean(), abs=2e-5)
  all_logp = np.concatenate(expected)
  assert metrics["tokens"] == len(all_logp) and metrics["samples"] == 3
  assert metrics["nll"] == pytest.approx(-all_logp.mean(), abs=2e-5)
  assert metrics["perplexity"] == pytest.approx(math.exp(-all_logp.mean()), rel=1e-4)


def greedy(params, ids, steps):
  ids = list(ids)
  for _ in range(steps):
    ids.append(int(np.argmax(direct_logits(params, ids)[-1])))
  return ids[-steps:]


def test_multiple_choice_prefers_the_models_own_greedy_continuation(params, tmp_path):
  rng = np.random.default_rng(1)
  letters = TOK.chars[2:54]  # ascii letters only: no whitespace to move between context and choice
  records, expected_ll = [], []
  for i, (context, steps) in enumerate([("The sky is", 1), ("Once upon a time", 4), ("Q: 2 and 2? A:", 3),
                                        ("Colors: red, blue,", 5)]):
    correct = TOK.decode(greedy(params, TOK.encode(context), steps))
    distractors = ["".join(rng.choice(list(letters), steps)) for _ in range(3)]
    choices = distractors[:i % 4] + [correct] + distractors[i % 4:]
    records.append({"context": context, "choices": choices, "label": i % 4})
    expected_ll.append([direct_logprobs(params, TOK.encode(context + c))[-len(c):].sum() for c in choices])
  path = write(tmp_path / "mc.jsonl", records)
  metrics, per_question = multiple_choice(params, CONFIG, TOK, path, batch_size=4)
  assert metrics == {"n": 4, "accuracy": 1.0, "acc_norm": 1.0}
  for q, ll in zip(per_question, expected_ll):
    np.testing.assert_allclose(q["loglikelihoods"], ll, atol=1e-4)
    assert q["prediction"] == q["label"] == q["prediction_norm"]


def test_choice_metrics_and_encode_pair():
  # acc picks the shorter choice; per character the longer one is more likely
  assert choice_metrics([[-4.0, -6.0]], [[" ab", " abcdef"]], [1]) == {"n": 1, "accuracy": 0.0, "acc_norm": 1.0}
  assert choice_metrics([[-1.0, -1.0], [-3.0, -2.0]], [["a", "b"], ["a", "b"]], [0, 1])["accuracy"] == 1.0
  assert encode_pair(TOK, "Q: x ", "y") == (TOK.encode("Q: x"), TOK.encode(" y"))  # trailing space moves
  assert encode_pair(TOK, "", "ab") == ([1], TOK.encode("ab"))  # empty context: the BOS prefix
  assert encode_pair(TOK, "ab", "c", add_special_tokens=True) == ([1] + TOK.encode("ab"), TOK.encode("c"))


@pytest.mark.parametrize("lines, line, message", [
    (['{"context": "a", "choices": [" b"], "label": 0}', '{"context": "a", "choices": [" b"], "label": 0,}'],
     2, "malformed JSON"),
    (['{"context": "a", "choices": [" b"], "label": 0}', "", '{"context": "a", "choices": [" b"]}'],
     3, "missing field 'label'"),
    (['{"context": "a", "choices": " b", "label": 0}'], 1, "'choices' must be list"),
    (['{"context": "a", "choices": [" b", " c"], "label": 2}'], 1, "out of range"),
    (['{"context": "a", "choices": [" b"], "label": true}'], 1, "'label' must be int"),
])
def test_multiple_choice_errors_name_the_line(params, tmp_path, lines, line, message):
  path = write(tmp_path / "mc.jsonl", lines)
  with pytest.raises(DataFormatError, match=f"mc.jsonl:{line}: .*{message}"):
    multiple_choice(params, CONFIG, TOK, path)


@pytest.mark.parametrize("record, message", [
    ({"txt": "a"}, "exactly one of 'text' or 'messages'"),
    ({"text": 3}, "'text' must be str"),
    ({"messages": [{"role": "user", "content": "<image> hi"}, {"role": "assistant", "content": "ok"}]}, "image"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "user"),
])
def test_perplexity_errors_name_the_line(params, tmp_path, record, message):
  path = write(tmp_path / "p.jsonl", [{"text": "fine"}, record])
  with pytest.raises(DataFormatError, match=f"p.jsonl:2: .*{message}"):
    perplexity(params, CONFIG, TOK, path, template="chatml")
