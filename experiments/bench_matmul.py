"""The stage-2 step's matmul shapes alone, JAX (jitted) against torch, fp32, on this CPU.

  python experiments/bench_matmul.py            # GFLOP/s per shape, best of 10 after 3 warm-ups
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python experiments/bench_matmul.py   # JAX without YNNPACK

Shapes (M x K x N) of SmolLM2-135M at batch 16 x 97 positions (1552 rows): the MLP's gate/up
projection, its down projection, a weight-shaped product (576 x 1552 x 1536) and the attention
projections (576 x 576). If both frameworks reach the same rate here, a difference in the
training step's speed comes from how the step schedules and surrounds its matmuls
(experiments/profile_stage2.py), not from the matmul kernels.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHAPES = ((1552, 576, 1536), (1552, 1536, 576), (576, 1552, 1536), (1552, 576, 576))


def best_rate(run, m: int, k: int, n: int, repeats: int = 10) -> float:
  """GFLOP/s of the fastest of `repeats` calls of `run` (which blocks), after 3 warm-up calls."""
  for _ in range(3):
    run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return 2.0 * m * k * n / best / 1e9


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  matmul = jax.jit(lambda a, b: a @ b)
  rng = np.random.default_rng(0)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, torch threads {args.threads}")
  print("| M x K x N | JAX GFLOP/s | torch GFLOP/s |\n|---|---|---|")
  for m, k, n in SHAPES:
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    jax_rate = best_rate(lambda: matmul(ja, jb).block_until_ready(), m, k, n)
    torch_rate = best_rate(lambda: ta @ tb, m, k, n)
    print(f"| {m} x {k} x {n} | {jax_rate:.1f} | {torch_rate:.1f} |")


if __name__ == "__main__":
  main()
