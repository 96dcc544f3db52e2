"""Answer one chat prompt with a decoder (the model's chat markup, no system prompt)."""
from __future__ import annotations

from graft_jax.data.templates import encode_conversation
from graft_jax.evaluate.generation import generate
from graft_jax.tasks.model_loading import load_from_config


def end_token_ids(tokenizer, config) -> tuple[int, ...]:
  """The model's end-of-turn and end-of-text ids (those the tokenizer knows)."""
  ids = set(config.eos_token_ids)
  for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>"):
    tid = tokenizer.convert_tokens_to_ids(token)
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
      ids.add(tid)
  return tuple(sorted(ids))


def run(config) -> str:
  params, model_config, tokenizer = load_from_config(config.model)
  prompt = encode_conversation([{"role": "user", "content": config.prompt}], tokenizer,
                               config.template, "standard", add_generation_prompt=True)
  out = generate(params, model_config, [prompt.ids.tolist()], max_new_tokens=config.max_new_tokens,
                 eos_ids=end_token_ids(tokenizer, model_config), temperature=config.temperature,
                 top_p=config.top_p, seed=config.seed)[0]
  reply = tokenizer.decode(out, skip_special_tokens=True)
  print(reply)
  return reply
