"""Smoke runs of the benchmarks on tiny models (never the full-size runs): experiments/bench_train.py's
step code against the PyTorch reference, and experiments/gpu_check.py on the CPU."""
import importlib.util
import json
import os

import pytest

from graft_jax.bench.batch import BatchShape, expanded_layout, synthetic_batch
from graft_jax.bench.report import goal_lines, stage_table
from graft_jax.bench.train_bench import run_train_bench, summarize
from graft_jax.convert.load import load_model
from graft_jax.models.vit import VitConfig
from graft_jax.surrogate import SurrogatePlan
from tests.llama_helpers import tiny_hf_llama

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = VitConfig(image_size=16, patch_size=8, width=24, depth=2, heads=2, mlp_dim=48)


def _gpu_check():
  spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "experiments", "gpu_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_bench_train_steps_and_the_pytorch_reference_start_from_the_same_loss(tmp_path):
  hf = tiny_hf_llama(tied=True, layers=4)
  hf.save_pretrained(tmp_path / "llama")
  target, config = load_model(str(tmp_path / "llama"))
  results = run_train_bench(config, target, VIT, BatchShape(batch=2, text_len=12, supervised=4, image_pos=3),
                            plan=SurrogatePlan.create(4, [(1, 2)]), stages=("stage2_surrogate",),
                            reference_llm=hf, warmup=0, steps=1, peak_flops=1e10, log=lambda _: None)
  r = results["stages"]["stage2_surrogate"]
  assert r["step_s"] > 0 and r["tokens_per_s"] > 0 and r["step_flops"] > 0 and r["mfu"] > 0
  assert r["decoder_tokens_per_step"] == 2 * (12 + 7)  # 5 ViT tokens + soi/eoi
  ref = results["reference"]["stage2_surrogate"]
  assert ref["first_loss"] == pytest.approx(results["stages"]["stage2_surrogate"]["first_loss"], rel=1e-4)
  assert len(hf.model.layers) == 4  # the reference cut a copy, not the caller's model
  assert ref["process"] == "own" and ref["host_rss_peak_bytes"] > 0  # the child measured itself
  table = stage_table(results)
  assert "graft_jax: stage 2 on the surrogate" in table and "PyTorch reference" in table
  assert any("x" in line and "goal x1.3" in line for line in goal_lines(results["summary"]))
  json.dumps(results)


def test_summary_ratios_and_goal_verdicts():
  run = lambda times, flops=0.0: {"step_s": sorted(times)[1], "step_times_s": times, "step_flops": flops,
                                   "decoder_tokens_per_step": 10, "tokens_per_s": 10 / sorted(times)[1],
                                   "first_loss": 1.0}
  # Round 2 ran under load for everyone: paired per-round ratios are 0.9, 0.9, 0.9.
  fake = {"stages": {"stage2_surrogate": run([0.9, 1.8, 0.9], 70.0), "stage2_full": run([1.0, 2.0, 1.0], 100.0)},
          "reference": {"stage2_surrogate": run([0.9, 1.8, 0.9])}}
  summary = summarize(fake)
  assert summary["surrogate_full_time_ratio"] == pytest.approx(0.9)
  assert summary["time_vs_flops_ratio_deviation"] == pytest.approx(0.9 / 0.7 - 1)
  lines = goal_lines(summary)
  assert "missed by 18.6 points" in lines[0]
  assert "x1.00 tokens/s" in lines[1] and "missed by 23%" in lines[1]
  fake["stages"]["stage2_full"]["step_times_s"] = [1.0, 2.0]  # not round-robin: ratio of medians
  assert summarize(fake)["surrogate_full_time_ratio"] == pytest.approx(0.9 / 1.0)


def test_synthetic_batch_layout_matches_the_step_expansion():
  shape = BatchShape(batch=3, text_len=10, supervised=3, image_pos=2)
  batch = synthetic_batch(shape, 50, 16, 7)
  layout = expanded_layout(batch, 7)
  assert layout["tokens"].shape == (3, 17) and layout["supervised"].sum() == 9
  assert layout["supervised"][:, -3:].all()  # the last text tokens are the targets
  text = synthetic_batch(shape, 50, 16, 7, text_only=True)
  assert text["tokens"].shape == (3, 17) and not text["has_image"].any()
  with pytest.raises(ValueError, match="image_pos"):
    BatchShape(text_len=10, supervised=9, image_pos=4)


def test_gpu_check_runs_on_the_cpu_at_tiny_size_and_records_a_failing_stage(tmp_path):
  out = tmp_path / "gpu_check.json"
  gpu_check = _gpu_check()
  results = gpu_check.main(["--tiny", "--inprocess", "--stages", "stage3_full,no_such_stage", "--dtype", "float32",
                            "--out", str(out)])  # float32: a third less compilation on the CPU than bf16
  saved = json.loads(out.read_text())
  assert saved["stages"]["stage3_full"]["mfu"] > 0
  assert saved["stages"]["stage3_full"]["trainable_params"] > 0
  assert "Unknown benchmark stage" in saved["stages"]["no_such_stage"]["error"]
  assert saved["attention_check"]["use"] == "xla" and not saved["complete"]
  assert results["summary"]["stage3_full_mfu_goal"] == 0.45
  table = gpu_check.table(str(out))
  assert "stage 3 (whole decoder)" in table and "failed: ValueError" in table and "goal 45%" in table


def test_gpu_check_records_a_stage_that_outlives_its_timeout(tmp_path):
  out = tmp_path / "gpu_check.json"
  _gpu_check().main(["--tiny", "--attention", "xla", "--stages", "stage3_full", "--stage_timeout", "2",
                     "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved["stages"]["stage3_full"]["error"] == "timed out after 2 s"
  assert not saved["complete"] and "elapsed_s" in saved


def test_step_options_bench_variants_agree_and_show_their_costs(tmp_path):
  from graft_jax.bench.step_options import option_table, run_option_bench
  # the variant kinds that change the step's code path (CI time: frozen_dtype and remat only
  # change a dtype or a LlamaConfig field, run by experiments/bench_step_options.py)
  tested = ("head_logits", "attention", "donation", "metrics_fetch")
  hf = tiny_hf_llama(tied=True, layers=4)
  hf.save_pretrained(tmp_path / "llama")
  target, config = load_model(str(tmp_path / "llama"))
  results = run_option_bench(config, target, VIT, BatchShape(batch=2, text_len=12, supervised=4, image_pos=3),
                             plan=SurrogatePlan.create(4, [(1, 2)]), comparisons=tested, warmup=0, steps=1,
                             loop_steps=2, log=lambda _: None)
  records = results["comparisons"]
  assert tuple(records) == tested
  for name, record in records.items():
    variants = list(record["variants"].values())
    now = variants[0]
    assert now["time_vs_now"] == pytest.approx(1.0)
    for v in variants:
      assert v["step_s"] > 0 and v["compile_s"] > 0 and v["xla_memory_bytes"]["total"] > 0
      assert v["first_loss"] == pytest.approx(now["first_loss"], rel=1e-5), (name, v)  # speed, not loss
  head = list(records["head_logits"]["variants"].values())
  assert head[1]["xla_memory_bytes"]["temp"] > head[0]["xla_memory_bytes"]["temp"]  # [B, T, V] logits
  donation = list(records["donation"]["variants"].values())
  assert donation[0]["xla_memory_bytes"]["alias"] > 0 and donation[1]["xla_memory_bytes"]["alias"] == 0
  assert "einsum + softmax attention" in option_table(results)
  json.dumps(results)


def test_profile_of_the_stage2_step_and_the_reference_on_a_tiny_model(tmp_path):
  from graft_jax.bench.profile import CATEGORIES, categorize, category_table  # pylint: disable=g-import-not-at-top
  from graft_jax.bench.profile_stage2 import profile_stage2  # pylint: disable=g-import-not-at-top
  hf = tiny_hf_llama(tied=True, layers=4)
  hf.save_pretrained(tmp_path / "llama")
  target, config = load_model(str(tmp_path / "llama"))
  r = profile_stage2(config, target, hf, VIT, BatchShape(batch=2, text_len=12, supervised=4, image_pos=3),
                     plan=SurrogatePlan.create(4, [(1, 2)]), trace_dir=str(tmp_path / "trace"),
                     timed_steps=1, profiled_steps=1, log=lambda _: None)
  for name in ("graft_jax", "reference"):
    assert r[name]["step_s"] > 0 and set(r[name]["categories"]) == set(CATEGORIES)
    assert r[name]["categories"]["matmul"] > 0 and r[name]["matmul_gflops_per_s"] > 0
  assert r["reference"]["matmul_flops"] > 0 and any(op.startswith("aten::") for op in r["reference"]["ops"])
  assert categorize("dot.12", "jax") == categorize("aten::mm", "torch") == "matmul"
  assert categorize("transpose.3", "jax") == "copies + transposes"
  assert "| step wall time |" in category_table({k: r[k]["categories"] for k in ("graft_jax", "reference")},
                                                {k: r[k]["step_s"] for k in ("graft_jax", "reference")})
  json.dumps(r)


def test_a_failing_reference_process_raises_with_the_childs_traceback():
  from graft_jax.bench.reference_process import ReferenceProcess  # pylint: disable=g-import-not-at-top
  batch = synthetic_batch(BatchShape(batch=2, text_len=12, supervised=4, image_pos=3), 64, VIT.image_size, 7)
  with pytest.raises(RuntimeError, match="reference process failed:[\\s\\S]*Traceback"):
    ReferenceProcess(None, VIT, SurrogatePlan.create(4, [(1, 2)]), batch, 7, lr=1e-4, seed=0)  # no model
