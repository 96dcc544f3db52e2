"""Evaluate an encoder package on a LLaVA-format evaluation file, on the surrogate or grafted."""
from __future__ import annotations

import json
import os

from graft_jax.data.readers import read_llava_json
from graft_jax.evaluate.report import write_report
from graft_jax.evaluate.vqa_eval import evaluate_samples
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.infer import vlm_for
from graft_jax.tasks.model_loading import load_from_config


def run(config) -> dict:
  target, llm_config, tokenizer = load_from_config(config.model)
  samples, skips = read_llava_json(config.eval_file, image_check="exists")
  if skips.total:
    print(f"{config.eval_file}: {skips.summary()}")
  samples = samples[:config.limit] if config.limit else samples
  results = {}
  for decoder in config.decoders:
    config.decoder = decoder
    model, params, described = vlm_for(config, target, llm_config, tokenizer)
    scores, records = evaluate_samples(
        model, params, samples, tokenizer, config.template, batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens, eos_ids=end_token_ids(tokenizer, llm_config),
        pad_id=llm_config.pad_token_id or 0)
    results[described] = (scores, records)
    print(f"[{described}] {json.dumps(scores['overall'])}")
  write_report(config.out_dir, {k: v[0] for k, v in results.items()}, {k: v[1] for k, v in results.items()})
  print(open(os.path.join(config.out_dir, "results.md")).read())
  return {k: v[0] for k, v in results.items()}
