"""Training-step benchmark on this CPU: every stage of the method on SmolLM2-135M, and the
authors'-style PyTorch stage-2 step on the same inputs.

  python experiments/bench_train.py [--batch 16 --text_len 30 --patch_size 8 --steps 2 --turn_steps 3]

Stages (same synthetic batch; plan [19, 28]): the translator (text only, on the surrogate), stage 2
on the surrogate, stage 2 on the full target, stage 3 (whole decoder) on the full target. Each:
median step time (rounds of turns: each turn 1 untimed + 3 timed steps), tokens/s (decoder positions, image slots included), compile
time (first call minus a step), peak host RSS, model FLOPs per step and MFU against a peak FLOP/s
measured by a matmul microbenchmark (or --peak_gflops). MFU's FLOPs: graft_jax/bench/flops.py
(6N trainable, 4N frozen with gradients flowing through, 2N forward-only, plus attention; the LM
head at supervised positions). The PyTorch reference (transformers LlamaForCausalLM from the same
GGUF, frozen, inputs_embeds; CLIPVisionModel + MLP adapter; AdamW; logits over the whole
sequence) runs stage 2 on the surrogate with torch threads = this machine's cores, as JAX uses,
in its own process (--reference_in_process: in this one, which slows both down).
Writes --out (JSON) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os

from graft_jax.assets import default_gguf_path
from graft_jax.bench.batch import BatchShape
from graft_jax.bench.report import goal_lines, stage_table, write_json
from graft_jax.bench.train_bench import DEFAULT_STAGES, run_train_bench
from graft_jax.config_lib import vit_config
from graft_jax.convert.load import load_model
from graft_jax.models.vit import VitConfig
from graft_jax.surrogate import SurrogatePlan


def parse_args(argv=None) -> argparse.Namespace:
  vit = vit_config()
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--text_len", type=int, default=30, help="text tokens per row before the image slot")
  p.add_argument("--supervised", type=int, default=10, help="supervised targets per row")
  p.add_argument("--image_pos", type=int, default=6)
  p.add_argument("--image_size", type=int, default=vit.image_size)
  p.add_argument("--patch_size", type=int, default=vit.patch_size)
  p.add_argument("--ranges", default="19,28", help="translator range a,b of the surrogate")
  p.add_argument("--stages", default=",".join(DEFAULT_STAGES), help='"": the reference alone')
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--steps", type=int, default=2, help="timed rounds")
  p.add_argument("--turn_steps", type=int, default=3, help="timed steps per turn of a round")
  p.add_argument("--turn_warmup", type=int, default=1, help="untimed steps at the start of each turn")
  p.add_argument("--peak_gflops", type=float, default=0.0, help="peak GFLOP/s; 0: measure")
  p.add_argument("--torch_threads", type=int, default=os.cpu_count())
  p.add_argument("--skip_reference", action="store_true")
  p.add_argument("--reference_in_process", action="store_true",
                 help="run the reference in this process beside JAX (default: its own process)")
  p.add_argument("--reference_full", action="store_true", help="also the reference on the full target")
  p.add_argument("--remat", default="none", help="decoder remat policy: none, dots, dots_no_batch, full")
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--out", default="experiments/results/bench/cpu.json")
  return p.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  v = vit_config()
  vit = VitConfig(image_size=args.image_size, patch_size=args.patch_size, width=v.width, depth=v.depth,
                  heads=v.heads, mlp_dim=v.mlp_dim, variant=v.variant)
  target, config = load_model(remat_policy=args.remat)  # SmolLM2-135M-Instruct, fp32
  a, b = (int(x) for x in args.ranges.split(","))
  plan = SurrogatePlan.create(config.num_layers, [(a, b)])
  reference_llm = None
  if not args.skip_reference:
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import LlamaForCausalLM  # pylint: disable=g-import-not-at-top
    path = default_gguf_path()
    reference_llm = LlamaForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                     dtype=torch.float32)
  shape = BatchShape(batch=args.batch, text_len=args.text_len, supervised=args.supervised, image_pos=args.image_pos)
  results = run_train_bench(config, target, vit, shape, plan=plan, stages=[s for s in args.stages.split(",") if s],
                            reference_llm=reference_llm, reference_full=args.reference_full,
                            warmup=args.warmup, steps=args.steps, turn_steps=args.turn_steps,
                            turn_warmup=args.turn_warmup,
                            peak_flops=args.peak_gflops * 1e9 or None, lr=args.lr, torch_threads=args.torch_threads,
                            reference_process=not args.reference_in_process)
  results["settings"]["model"] = "SmolLM2-135M-Instruct (GGUF, fp32)"
  results["settings"]["remat_policy"] = args.remat
  m, s = results["machine"], results["settings"]
  print(f"\nSmolLM2-135M, {m['platform']} x{m['cpu_count']} cores (load average 1/5/15 min "
        f"{m['load_average_1_5_15']} at start, {m['load_average_at_end']} at end), "
        f"{m['date']}; batch {s['batch']} x {s['seq_len']} positions ({s['text_len']} text + {s['image_len']} "
        f"image), {s['supervised_per_row']} supervised/row; plan {s['plan']}; peak "
        f"{results['peak_flops'] / 1e9:.1f} GFLOP/s ({results['peak_flops_source']})\n")
  print(stage_table(results))
  print()
  for line in goal_lines(results["summary"]):
    print(line)
  if args.out:
    write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
