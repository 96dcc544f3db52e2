"""The real SmolLM2-135M-Instruct weights: our logits and greedy text vs transformers on the same GGUF."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from graft_jax.assets import default_gguf_path
from graft_jax.convert.load import load_model
from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.evaluate.generation import generate
from graft_jax.models.llama import Decoder

QUESTIONS = ["What is the capital of France?", "Write a short story about a robot who learns to paint.",
             "Explain how photosynthesis works.", "List three prime numbers."]


@pytest.fixture(scope="module")
def models():
  from transformers import LlamaForCausalLM  # pylint: disable=g-import-not-at-top
  path = default_gguf_path()
  hf = LlamaForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).eval()
  params, config = load_model()
  return hf, params, config, load_tokenizer()


def _chat_prompt(tokenizer, question):
  return tokenizer(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n").input_ids


def test_config_read_from_gguf(models):
  _, params, config, _ = models
  assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (30, 576, 9, 3)
  assert config.tie_word_embeddings and "head" not in params
  assert params["segments"]["blocks_0"]["attn"]["q_proj"]["kernel"].shape == (30, 576, 576)


def test_logits_match_transformers_on_chat_prompts(models):
  hf, params, config, tokenizer = models
  forward = jax.jit(lambda p, t: Decoder(config).apply({"params": p}, t)[0])
  for question in QUESTIONS:
    ids = _chat_prompt(tokenizer, question)
    ours = np.asarray(forward(params, jnp.asarray([ids])))
    with torch.no_grad():
      ref = hf(torch.tensor([ids])).logits.numpy()
    assert np.abs(ours - ref).max() <= 1e-3, question


def test_greedy_continuations_identical_token_for_token(models):
  hf, params, config, tokenizer = models
  prompts = [_chat_prompt(tokenizer, q) for q in QUESTIONS]
  end = config.eos_token_ids  # <|im_end|>; both sides stop there
  ours = generate(params, config, prompts, max_new_tokens=32, eos_ids=end)  # batched, left-padded
  for prompt, out in zip(prompts, ours):
    with torch.no_grad():
      ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                        max_new_tokens=32, do_sample=False, eos_token_id=list(end))
    assert out == ref[0, len(prompt):].tolist()
  assert sum(len(out) == 32 for out in ours) >= 2  # most answers run the full 32 tokens
