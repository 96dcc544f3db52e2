"""Prefill and decode throughput of SmolLM2-135M on this machine: graft_jax vs transformers.

  python experiments/bench_llm.py [--batch 4 --prompt_len 256 --new_tokens 64]

Both load the same GGUF (fp32). Prefill: one forward over batch x prompt_len tokens with
full-vocabulary logits. Decode: greedy generation of new_tokens per row with the KV cache
(no early stop). Times are medians of `--repeats` runs after a warm-up (which for graft_jax
includes compilation, reported separately).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from graft_jax.assets import default_gguf_path
from graft_jax.convert.load import load_model
from graft_jax.evaluate.generation import generate_from_embeddings
from graft_jax.models.llama import Decoder


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_jax(tokens: np.ndarray, new_tokens: int, repeats: int) -> dict:
  params, config = load_model()
  model = Decoder(config)
  forward = jax.jit(lambda p, t: model.apply({"params": p}, t)[0])
  embed = jax.jit(lambda p, t: model.apply({"params": p}, t, method=Decoder.embed_tokens))
  ids = jnp.asarray(tokens)
  mask = jnp.ones(ids.shape, bool)

  def decode():
    return generate_from_embeddings(params, embed(params, ids), mask, jax.random.key(0), config=config,
                                    segments=None, max_new_tokens=new_tokens, eos_ids=(), pad_id=0)

  start = time.perf_counter()
  forward(params, ids).block_until_ready()
  compile_prefill = time.perf_counter() - start
  start = time.perf_counter()
  decode().block_until_ready()
  compile_decode = time.perf_counter() - start
  prefill = _median_time(lambda: forward(params, ids).block_until_ready(), repeats)
  dec = _median_time(lambda: decode().block_until_ready(), repeats)
  return dict(prefill_s=prefill, decode_s=dec, first_prefill_s=compile_prefill,
              first_decode_s=compile_decode)


def bench_torch(tokens: np.ndarray, new_tokens: int, repeats: int) -> dict:
  from transformers import LlamaForCausalLM  # pylint: disable=g-import-not-at-top
  path = default_gguf_path()
  model = LlamaForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).eval()
  ids = torch.tensor(tokens)
  mask = torch.ones_like(ids)

  def prefill():
    with torch.no_grad():
      model(ids, attention_mask=mask)

  def decode():
    with torch.no_grad():
      model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                     do_sample=False, pad_token_id=0)

  prefill()
  decode()
  return dict(prefill_s=_median_time(prefill, repeats), decode_s=_median_time(decode, repeats))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--prompt_len", type=int, default=256)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  tokens = np.random.default_rng(0).integers(3, 49152, size=(args.batch, args.prompt_len))
  torch.set_num_threads(os.cpu_count() or 1)
  results = {"graft_jax": bench_jax(tokens, args.new_tokens, args.repeats),
             "transformers": bench_torch(tokens, args.new_tokens, args.repeats)}
  prefill_tokens = args.batch * args.prompt_len
  decode_tokens = args.batch * args.new_tokens
  print(f"SmolLM2-135M fp32, {jax.devices()[0].platform} x{os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}; batch {args.batch}, prompt {args.prompt_len}, new {args.new_tokens}")
  print(f"{'':14s} {'prefill tok/s':>14s} {'decode tok/s':>13s}")
  for name, r in results.items():
    print(f"{name:14s} {prefill_tokens / r['prefill_s']:14.0f} {decode_tokens / r['decode_s']:13.1f}")
  j, t = results["graft_jax"], results["transformers"]
  print(f"graft_jax / transformers: prefill x{t['prefill_s'] / j['prefill_s']:.2f}, "
        f"decode x{t['decode_s'] / j['decode_s']:.2f}")
  print(f"graft_jax first call (compile + run): prefill {j['first_prefill_s']:.1f} s, "
        f"decode {j['first_decode_s']:.1f} s")


if __name__ == "__main__":
  main()
