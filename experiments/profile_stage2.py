"""Where the stage-2 step's time goes, graft_jax against the PyTorch reference (issue 7's x1.3 goal).

  python experiments/profile_stage2.py [--batch 16 --text_len 30 --ranges 19,28]

Same batch and models as experiments/bench_train.py's stage 2 on the surrogate and its reference
(SmolLM2-135M, fp32, plan [19, 28]). Both steps are compiled and warmed, timed round-robin, then
profiled: graft_jax's under XLA's profiler (per-thunk times from a perfetto trace), the reference
under torch.profiler (self CPU time per aten op, with FLOPs). Prints seconds per step by category
(matmul, softmax, elementwise, copies, indexing, reductions), the top ops of each and the FLOP rate
inside the matmuls; writes --out (JSON; the trace goes to --trace_dir).
"""
from __future__ import annotations

import argparse
import os
import tempfile

from graft_jax.assets import default_gguf_path
from graft_jax.bench.batch import BatchShape
from graft_jax.bench.profile import category_table
from graft_jax.bench.profile_stage2 import profile_stage2
from graft_jax.bench.report import write_json
from graft_jax.bench.train_bench import machine_info
from graft_jax.config_lib import vit_config
from graft_jax.convert.load import load_model
from graft_jax.models.vit import VitConfig
from graft_jax.surrogate import SurrogatePlan


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--text_len", type=int, default=30)
  p.add_argument("--supervised", type=int, default=10)
  p.add_argument("--ranges", default="19,28")
  p.add_argument("--timed_steps", type=int, default=3)
  p.add_argument("--profiled_steps", type=int, default=2)
  p.add_argument("--torch_threads", type=int, default=os.cpu_count())
  p.add_argument("--trace_dir", default=os.path.join(tempfile.gettempdir(), "graft_jax_profile"))
  p.add_argument("--out", default="experiments/results/bench/profile_stage2.json")
  args = p.parse_args(argv)

  import torch  # pylint: disable=g-import-not-at-top
  from transformers import LlamaForCausalLM  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.torch_threads)
  vit = VitConfig(**{k: v for k, v in vit_config().to_dict().items() if k in VitConfig.__dataclass_fields__})
  target, config = load_model()
  path = default_gguf_path()
  reference_llm = LlamaForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                   dtype=torch.float32)
  a, b = (int(x) for x in args.ranges.split(","))
  plan = SurrogatePlan.create(config.num_layers, [(a, b)])
  shape = BatchShape(batch=args.batch, text_len=args.text_len, supervised=args.supervised)
  results = profile_stage2(config, target, reference_llm, vit, shape, plan=plan, trace_dir=args.trace_dir,
                           timed_steps=args.timed_steps, profiled_steps=args.profiled_steps)
  results["machine"] = machine_info()
  print(f"\nstage 2 on the surrogate, SmolLM2-135M fp32, batch {shape.batch} x {results['settings']['seq_len']}, "
        f"{results['settings']['plan']}; {results['machine']['date']}, load average "
        f"{results['machine']['load_average_1_5_15']}\n")
  print(category_table({k: results[k]["categories"] for k in ("graft_jax", "reference")},
                       {k: results[k]["step_s"] for k in ("graft_jax", "reference")},
                       {k: results[k]["profiled_step_s"] for k in ("graft_jax", "reference")}))
  for k in ("graft_jax", "reference"):
    r = results[k]
    print(f"\n{k}: matmul {r['matmul_gflops_per_s']:.1f} GFLOP/s inside the matmul ops; top ops:")
    for op, category, s in r["top"]:
      print(f"  {s:7.3f} s  {category:<28} {op}")
  write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
