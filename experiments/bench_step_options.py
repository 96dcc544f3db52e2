"""Before/after of each train-step speed choice on SmolLM2-135M on this CPU (issue 7, item 3).

  python experiments/bench_step_options.py [--comparisons head_logits,attention --steps 5]

Comparisons (graft_jax/bench/step_options.py): LM head at supervised positions vs everywhere;
jax.nn.dot_product_attention vs einsum attention; fp32 vs frozen bf16 storage vs bf16 compute;
donated vs copied state (stage 2 and stage 3); rematerialisation none / dots_no_batch / full for stage 2 on the
surrogate and stage 3; metrics fetched at the end vs after every step. Same synthetic batch as
experiments/bench_train.py (batch 16, 30 text tokens + 67 image embeddings, 10 supervised per
row, plan [19, 28]). With --data_dir, also the number of step shapes (= compilations) in an epoch
of the main job's stage-1 data (shapes + text) with the pipeline's length buckets and without.
Per variant: median step time, its per-round ratio to graft_jax's choice
(timed round-robin), compile time, the compiled step's memory, first loss. Writes --out (JSON)
and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os

from graft_jax.bench.batch import BatchShape
from graft_jax.bench.report import write_json
from graft_jax.bench.bucket_count import exact_buckets, step_shapes
from graft_jax.bench.step_options import COMPARISONS, option_table, run_option_bench
from graft_jax.bench.train_bench import machine_info
from graft_jax.config_lib import vit_config
from graft_jax.convert.load import load_model
from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.data.tfds_builders import load_source
from graft_jax.models.vit import VitConfig
from graft_jax.surrogate import SurrogatePlan


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--comparisons", default=",".join(COMPARISONS))
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--text_len", type=int, default=30)
  p.add_argument("--supervised", type=int, default=10)
  p.add_argument("--ranges", default="19,28")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--loop_steps", type=int, default=4, help="steps per timed call in metrics_fetch")
  p.add_argument("--data_dir", default="data_cache/vqa_cs_tfds",
                 help="the main job's tfds data: count step shapes per epoch with and without buckets; '' skips")
  p.add_argument("--out", default="experiments/results/bench/step_options.json")
  return p.parse_args(argv)


def count_shapes(data_dir: str, image_size: int, batch: int, image_len: int = 67, max_len: int = 512) -> dict:
  """Step shapes in one epoch of the stage-1 mixture, default buckets vs one bucket per length."""
  sources = [load_source(name, "train", data_dir) for name in ("graft_shapes", "graft_text")]
  out = {"data_dir": data_dir, "max_len": max_len, "shapes": {}}
  for name, buckets in (("default", None), ("none", exact_buckets(max_len))):
    counts = step_shapes(sources, load_tokenizer(), template="chatml", mode="markers", max_len=max_len,
                         batch_size=batch, image_size=image_size, image_len=image_len, buckets=buckets)
    out["shapes"][name] = {"batches": sum(counts.values()), "distinct": len(counts),
                           "shapes": sorted([list(k) + [n] for k, n in counts.items()])}
  return out


def main(argv=None) -> dict:
  args = parse_args(argv)
  v = vit_config()
  vit = VitConfig(image_size=v.image_size, patch_size=v.patch_size, width=v.width, depth=v.depth, heads=v.heads,
                  mlp_dim=v.mlp_dim, variant=v.variant)
  target, config = load_model()  # SmolLM2-135M-Instruct, fp32
  a, b = (int(x) for x in args.ranges.split(","))
  plan = SurrogatePlan.create(config.num_layers, [(a, b)])
  shape = BatchShape(batch=args.batch, text_len=args.text_len, supervised=args.supervised)
  machine = machine_info()
  results = run_option_bench(config, target, vit, shape, plan=plan, comparisons=args.comparisons.split(","),
                             warmup=args.warmup, steps=args.steps, loop_steps=args.loop_steps)
  machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
  results["machine"] = machine
  print(f"\nSmolLM2-135M-Instruct (GGUF, fp32), {machine['platform']} x{machine['cpu_count']} cores, "
        f"{machine['date']}, load average "
        f"{machine['load_average_1_5_15']} at start, {machine['load_average_at_end']} at end\n")
  print(option_table(results))
  if args.data_dir:
    results["buckets"] = count_shapes(args.data_dir, vit.image_size, args.batch)
    for name, counts in results["buckets"]["shapes"].items():
      print(f"\nbuckets={name}: {counts['batches']} batches, {counts['distinct']} step shapes (compilations)")
  if args.out:
    write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
