"""The reproduction's bookkeeping: seed summaries, the equal-score saving, compute from metrics."""
import json

import numpy as np
import pytest

from graft_jax.models.presets import preset
from graft_jax.reproduction import report, runs
from graft_jax.reproduction.scoring import run_compute, train_flops_per_token
from graft_jax.surrogate import SurrogatePlan
from graft_jax.tasks.surrogate import cached, equal_score_saving
from tests.config_files import load_config


def _scores(overall, color):
  return {"overall": {"accuracy": overall}, "by_question_type": {"color": {"accuracy": color}}}


def test_summary_is_mean_and_sample_std_over_seeds():
  per_seed = {"0": {"b_surrogate_grafted": _scores(0.2, 0.5)}, "1": {"b_surrogate_grafted": _scores(0.4, 0.7)}}
  summary = report.summarize(per_seed)
  row = summary["b_surrogate_grafted"]
  assert row["overall"]["mean"] == pytest.approx(0.3) and row["overall"]["std"] == pytest.approx(np.sqrt(0.02))
  assert row["by_type"]["color"]["mean"] == pytest.approx(0.6) and row["overall"]["n"] == 2
  table = report.results_table(summary)
  assert "| (b) the same encoder grafted onto the full target, zero-shot | 0.300 ± 0.141 | 0.600 ± 0.141 |" in table


def _curve(points):
  return [{"step": i, "accuracy": a, "flops": f, "seconds": f / 10} for i, (a, f) in enumerate(points)]


def test_equal_score_saving_interpolates_the_first_crossing():
  curves = {"from_adapter": _curve([(0.1, 100), (0.3, 200), (0.5, 300)]),
            "from_graft": _curve([(0.4, 50), (0.6, 150)])}
  out = equal_score_saving(curves)
  # Goal 0.5: the graft route reaches it half-way from 50 to 150 (100), the adapter route at 300.
  assert out["flops"]["graft"] == pytest.approx(100) and out["flops"]["adapter"] == pytest.approx(300)
  assert out["flops"]["saving"] == pytest.approx(2 / 3) and "67% less" in out["statement"]
  curves["from_graft"] = _curve([(0.1, 50), (0.2, 150)])
  assert equal_score_saving(curves)["flops"]["saving"] is None
  curves["from_adapter"] = _curve([(0.3, 100), (0.3, 200)])
  assert "did not improve" in equal_score_saving(curves)["statement"]


def test_compute_counts_tokens_times_flops_and_step_times(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for step in (1, 2, 3):
      f.write(json.dumps({"step": step, "tokens/image": 10.0, "tokens/text": 5.0, "step_time_s": 2.0, "loss": 1.0}) + "\n")
  c = run_compute(str(tmp_path), flops_per_token=4.0, upto_step=2)
  assert (c.steps, c.tokens, c.flops, c.seconds) == (2, 30.0, 120.0, 4.0)
  (tmp_path / "mix").mkdir()
  with open(tmp_path / "mix" / "metrics.jsonl", "w") as f:
    for step, surrogate, text in ((1, 0, 5.0), (2, 1, 15.0), (3, 0, 5.0)):  # a mix alternates its surrogates
      f.write(json.dumps({"step": step, "tokens/image": 10.0, "tokens/text": text, "surrogate": surrogate,
                          "step_time_s": 1.0}) + "\n")
  c = run_compute(str(tmp_path / "mix"), flops_per_token=[4.0, 1.0])
  assert (c.steps, c.tokens, c.flops, c.seconds) == (3, 55.0, 15 * 4 + 25 * 1 + 15 * 4, 3.0)
  config = preset("smollm2-135m")
  plan = SurrogatePlan.create(config.num_layers, [(19, 28)])
  frozen_full = train_flops_per_token(config, None, False, 64)
  assert train_flops_per_token(config, None, True, 64) == pytest.approx(1.5 * frozen_full)
  assert 0.6 < train_flops_per_token(config, plan.segments, False, 64) / frozen_full < 0.8


def test_cached_computes_once(tmp_path):
  calls = []
  assert cached(str(tmp_path / "a" / "x.json"), lambda: calls.append(1) or {"v": 1}) == {"v": 1}
  assert cached(str(tmp_path / "a" / "x.json"), lambda: calls.append(1) or {"v": 2}) == {"v": 1}
  assert calls == [1]


def test_run_configs_follow_the_job():
  job = load_config("surrogate", "full")
  assert job.seeds == (0, 1, 2)
  on_target = runs.encoder_config(job, 1, "target", "runs/x/translator")
  assert on_target.ranges == () and on_target.init_from == "" and on_target.vit.seed == 1
  assert on_target.train.seed == 1 and on_target.trainable == runs.ENCODER_RULES
  on_surrogate = runs.encoder_config(job, 2, "surrogate", "runs/x/translator")
  assert on_surrogate.ranges == ((12, 28),) and on_surrogate.init_from == "runs/x/translator"
  truncation = runs.encoder_config(job, 2, "truncation", "runs/x/translator")
  assert truncation.ranges == ((12, 28),) and truncation.init_from == ""
  assert runs.transfer_config(job, "from_graft", "d").trainable == runs.DECODER_RULES
  with pytest.raises(ValueError, match="Unknown encoder condition"):
    runs.encoder_config(job, 0, "nothing", "")
  with pytest.raises(ValueError, match="Unknown size"):
    load_config("surrogate", "huge")


def test_an_unknown_stage0_objective_is_refused():
  from graft_jax.tasks.surrogate import stage0  # pylint: disable=g-import-not-at-top
  job = load_config("surrogate", "full")
  job.translator_objective = "mse"
  with pytest.raises(ValueError, match="Unknown translator_objective 'mse'"):
    stage0(job, target={}, truncation={}, llm_config=None, tokenizer=None, plan=None)


def test_stage2_chunks_for_translator_refits():
  from graft_jax.reproduction.refresh import chunk_steps  # pylint: disable=g-import-not-at-top
  assert chunk_steps(60, 0) == [60] and chunk_steps(60, 2) == [20, 20, 20] and chunk_steps(10, 2) == [3, 3, 4]
  with pytest.raises(ValueError, match="needs at least 3 stage-2 steps"):
    chunk_steps(2, 2)
