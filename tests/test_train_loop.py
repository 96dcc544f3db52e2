"""The training program end to end on a tiny decoder with SmolLM2's tokenizer: every stage trains
and chains into the next, and a killed run resumes onto the uninterrupted loss curve."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from graft_jax.config_lib import data_config, train_config
from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.train.checkpoint import load_encoder_package
from graft_jax.train.loop import train
from graft_jax.train.metrics import read_metrics
from graft_jax.train.signals import PREEMPTED_EXIT_CODE
from tests.config_files import load_config
from tests.tiny_vlm import build_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(model dir, data config): a 4-layer decoder over SmolLM2's vocabulary, and small datasets."""
  return build_tiny(tmp_path_factory.mktemp("tiny"), data_config(), n_train=32)


def tiny_config(stage, tiny, run_dir, steps=6, **train):
  model_dir, data = tiny
  config = train_config(stage)
  config.model.source = model_dir
  config.data = data
  config.vit.update({"image_size": 16, "patch_size": 8, "width": 24, "depth": 2, "heads": 2, "mlp_dim": 48})
  if config.ranges:
    config.ranges = ((1, 2),)
  config.run_dir = str(run_dir)
  config.train.update({"steps": steps, "batch_size": 8, "max_len": 256, **train})
  config.checkpoint.save_every = 2
  return config


def json_roundtrip(x):
  return json.loads(json.dumps(x))


def _losses(run_dir):
  return [r["loss"] for r in read_metrics(str(run_dir))]


def test_every_stage_trains_and_chains(tiny, tmp_path):
  translator = train(tiny_config("translator", tiny, tmp_path / "translator", steps=8, lr=3e-3))
  losses = _losses(tmp_path / "translator")
  assert len(losses) == 8 and losses[-1] < losses[0]
  assert translator["final_step"] == 8
  previous = tmp_path / "translator"
  for stage in ("pretrain", "finetune_encoder", "finetune_decoder"):
    config = tiny_config(stage, tiny, tmp_path / stage, steps=3)
    config.init_from = str(previous)
    train(config)
    assert len(_losses(tmp_path / stage)) == 3 and all(np.isfinite(_losses(tmp_path / stage)))
    previous = tmp_path / stage
  params, meta = load_encoder_package(str(tmp_path / "finetune_encoder" / "encoder_package"))
  assert set(params) == {"img", "proj"} and meta["plan"]["description"] == "keep 0, translator 1, drop 2, keep 3"
  assert meta["target"]["hidden_size"] == 32


  # The decoder alone from a stage-1 run (translator + adapter + encoder post-LN trained), as the
  # main job builds each seed's surrogate after stage 1: only the translator changes.
  from graft_jax.convert.load import load_model  # pylint: disable=g-import-not-at-top
  from graft_jax.surrogate import SurrogatePlan, make_surrogate  # pylint: disable=g-import-not-at-top
  from graft_jax.train.model_setup import load_previous_stage  # pylint: disable=g-import-not-at-top
  target, llm_config = load_model(tiny[0])
  plan = SurrogatePlan.create(llm_config.num_layers, [(1, 2)])
  truncation = make_surrogate(target, plan)
  surrogate = load_previous_stage({"llm": truncation}, plan, str(tmp_path / "pretrain"))
  assert set(surrogate) == {"llm"}
  changed = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
      jax.tree.leaves(surrogate["llm"]["segments"]["translator_0"]), jax.tree.leaves(truncation["segments"]["translator_0"]))]
  assert any(changed)
  jax.tree.map(np.testing.assert_array_equal, surrogate["llm"]["segments"]["blocks_0"], truncation["segments"]["blocks_0"])


def test_init_from_a_missing_stage_fails_before_training(tiny, tmp_path):
  config = tiny_config("pretrain", tiny, tmp_path / "pretrain")
  config.init_from = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="run that stage first"):
    train(config)


def test_resume_with_another_plan_is_refused(tiny, tmp_path):
  train(tiny_config("translator", tiny, tmp_path / "run", steps=2))
  config = tiny_config("translator", tiny, tmp_path / "run", steps=4)
  config.ranges = ((0, 2),)
  with pytest.raises(ValueError, match="plan"):
    train(config)


def _cli_args(config):
  model_dir, data = config.model.source, config.data
  return [sys.executable, "-m", "graft_jax.main", f"--config=configs/{config.stage}.py",
          f"--config.model.source={model_dir}", f"--config.data.out_dir={data.out_dir}",
          f"--config.data.data_dir={data.data_dir}", "--config.vit.image_size=16", "--config.vit.patch_size=8",
          "--config.vit.width=24", "--config.vit.depth=2", "--config.vit.heads=2", "--config.vit.mlp_dim=48",
          "--config.ranges=((1, 2),)", f"--config.run_dir={config.run_dir}",
          f"--config.train.steps={config.train.steps}", "--config.train.batch_size=8",
          "--config.train.max_len=256", "--config.checkpoint.save_every=2"]


def _wait_for(predicate, proc, timeout=240):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() - start < timeout
    time.sleep(0.2)


@pytest.mark.parametrize("kill", ["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_onto_the_uninterrupted_curve(tiny, tmp_path, kill):
  reference = tiny_config("translator", tiny, tmp_path / "reference", steps=8)
  train(reference)
  expected = _losses(tmp_path / "reference")
  config = tiny_config("translator", tiny, tmp_path / "killed", steps=8)
  args = _cli_args(config)
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ckpt = tmp_path / "killed" / "checkpoints"
  if kill == "SIGTERM":
    _wait_for(lambda: (tmp_path / "killed" / "metrics.jsonl").exists()
              and len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
  else:
    _wait_for(lambda: (ckpt / "2").is_dir(), proc)  # a committed periodic save
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
  stopped_at = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  assert 0 < stopped_at < 8
  resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed {tmp_path / 'killed'} at step" in resumed.stdout
  np.testing.assert_allclose(_losses(tmp_path / "killed"), expected, rtol=1e-5)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
  from graft_jax.train.checkpoint import RunCheckpointer  # pylint: disable=g-import-not-at-top
  from graft_jax.train.loop import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  config = tiny_config("translator", tiny, tmp_path / "nan", steps=6, lr=1e30, warmup_ratio=0.0)
  config.checkpoint.save_every = 1
  with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
    train(config)
  checkpointer = RunCheckpointer(str(tmp_path / "nan" / "checkpoints"), keep_last=2, save_every=0)
  assert checkpointer.latest_step() is not None and checkpointer.latest_step() < 6
  trained, _ = checkpointer.restore_trainable()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trained))
  checkpointer.close()


def test_main_job_runs_the_reproduction(tiny, tmp_path):
  from graft_jax.main import run_task  # pylint: disable=g-import-not-at-top
  config = load_config("surrogate")
  model_dir, data = tiny
  config.model.source, config.data = model_dir, data
  config.model.remat_policy = "none"  # CI time: remat compiles slower; its numerics: test_llama_parity
  config.run_dir, config.out_dir = str(tmp_path / "route"), str(tmp_path / "results")
  config.vit.update({"image_size": 16, "patch_size": 8, "width": 24, "depth": 2, "heads": 2, "mlp_dim": 48})
  config.ranges, config.mix_ranges = ((1, 2),), ()  # one surrogate: the mix has its own test (test_train_mix)
  config.steps = {"translator": 3, "pretrain": 0, "encoder": 3, "adapter": 2, "transfer": 2}
  # the encoder is pretrained on labelled scenes first, and every stage starts from it
  config.encoder_pretrain.update({"steps": 3, "batch_size": 4, "scenes": 16, "dir": str(tmp_path / "vision")})
  config.transfer_eval_every = 1
  config.translator_fit.sequences = 16  # stage 0 by hidden-state matching (the default objective)
  config.refresh.update({"rounds": 1, "images": 8, "text": 4, "steps": 2})  # stage 2 in two chunks, one refit
  config.batch_size, config.num_eval_chats = 8, 4
  config.eval.update({"limit": 4, "batch_size": 4, "max_new_tokens": 3})
  # (c) and (d) are the same stage-2 run on other decoders (tests/test_reproduction.py checks their configs).
  config.conditions = ("surrogate", "untrained")
  result = run_task(config)
  rows = {"a_surrogate_on_surrogate", "b_surrogate_grafted", "e_untrained_grafted", "prior_no_image"}
  assert set(result["per_seed"]["0"]) == rows == set(result["summary"])
  assert all(s["overall"]["n"] == 4 for s in result["per_seed"]["0"].values())
  assert result["fidelity"]["translator"] != result["fidelity"]["untrained"]
  assert result["encoder_pretrain"]["steps"] == 3 and config.vit.source == str(tmp_path / "vision")
  refit = result["refits"]["0"][0]
  assert refit["steps"] == 2 and refit["teacher_tokens"] > 0 and refit["run_dir"].endswith("seed0/refit_r0")
  assert (tmp_path / "route" / "seed0" / "encoder_surrogate_r0" / "encoder_package").is_dir()
  curves = result["transfer"]["curves"]
  assert [p["step"] for p in curves["from_graft"]] == [0, 1, 2] == [p["step"] for p in curves["from_adapter"]]
  # The graft route starts after stage 0 and stage 2 on the surrogate; the adapter route after its adapter stage.
  assert curves["from_graft"][0]["flops"] > 0 and curves["from_adapter"][0]["flops"] > 0
  assert all(a["flops"] < b["flops"] for c in curves.values() for a, b in zip(c, c[1:]))
  for name in ("results.json", "results.md", "examples.png", "transfer.png"):
    assert (tmp_path / "results" / name).exists()
  assert "(b) the same encoder grafted" in (tmp_path / "results" / "results.md").read_text()
  config.conditions, config.steps.transfer = ("surrogate",), 0
  again = run_task(config)  # a rerun resumes the finished runs and reads their scores back
  assert again["per_seed"]["0"]["b_surrogate_grafted"] == json_roundtrip(result["per_seed"]["0"]["b_surrogate_grafted"])
  package = tmp_path / "route" / "seed0" / "encoder_surrogate" / "encoder_package"
  assert (package / "package.json").exists()

  # Ask the trained encoder about an image, grafted onto the full target and on the surrogate.
  infer = load_config("infer")
  infer.model.source, infer.package = model_dir, str(package)
  infer.surrogate_from = str(tmp_path / "route" / "translator")
  infer.image = os.path.join(data.out_dir, "shapes", "images", "test", "000000.png")
  infer.max_new_tokens = 4
  for decoder in ("target", "surrogate"):
    infer.decoder = decoder
    assert isinstance(run_task(infer), str)

  # Score it on the test split, both ways, with a report written.
  evaluation = load_config("evaluate")
  evaluation.model.source, evaluation.package = model_dir, str(package)
  evaluation.surrogate_from = str(tmp_path / "route" / "translator")
  evaluation.eval_file = os.path.join(data.out_dir, "shapes", "test.json")
  evaluation.out_dir, evaluation.max_new_tokens, evaluation.batch_size = str(tmp_path / "eval"), 3, 4
  scores = run_task(evaluation)
  assert len(scores) == 2 and all(s["overall"]["n"] == 4 for s in scores.values())
  assert (tmp_path / "eval" / "results.md").exists()

  # A package is refused by a target it was not trained for.
  from graft_jax.convert.load import load_model  # pylint: disable=g-import-not-at-top
  from graft_jax.graft import load_package_for  # pylint: disable=g-import-not-at-top
  from graft_jax.train.checkpoint import CheckpointMismatchError  # pylint: disable=g-import-not-at-top
  _, llm_config = load_model(model_dir)
  with pytest.raises(CheckpointMismatchError, match="hidden_size: package 32 != target 48"):
    load_package_for(str(package), llm_config.replace(hidden_size=48), load_tokenizer())
