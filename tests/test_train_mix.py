"""Training the encoder against several surrogates at once (train/mix.py) through the real loop on
a tiny decoder: alternation, equivalence to one surrogate, and bad mixes."""
import numpy as np
import pytest

from graft_jax.config_lib import data_config
from graft_jax.models.presets import preset
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train.checkpoint import load_encoder_package
from graft_jax.train.loop import train
from graft_jax.train.metrics import read_metrics
from graft_jax.train.mix import mix_flops_saved
from tests.test_train_loop import tiny_config
from tests.tiny_vlm import build_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return build_tiny(tmp_path_factory.mktemp("tiny_mix"), data_config(), n_train=32)


@pytest.fixture(scope="module")
def translators(tiny, tmp_path_factory):
  """Run dirs of two trained translators: plan [1, 2] and plan [2, 2]."""
  root = tmp_path_factory.mktemp("translators")
  out = {}
  for ranges in ((1, 2), (2, 2)):
    config = tiny_config("translator", tiny, root / f"t{ranges[0]}", steps=2)
    config.ranges = (ranges,)
    out[ranges] = str(train(config)["run_dir"])
  return out


def _encoder_run(tiny, run_dir, translator, mix=(), steps=4):
  config = tiny_config("finetune_encoder", tiny, run_dir, steps=steps)
  config.init_from = translator
  config.mix = mix
  train(config)
  return read_metrics(str(run_dir))


@pytest.fixture(scope="module")
def plain(tiny, translators, tmp_path_factory):
  """Metrics and run dir of 4 plain stage-2 steps against the [1, 2] surrogate."""
  run_dir = tmp_path_factory.mktemp("plain")
  return _encoder_run(tiny, run_dir, translators[(1, 2)]), run_dir


def test_a_mix_of_the_same_surrogate_twice_is_plain_training(tiny, translators, plain, tmp_path):
  (plain, plain_dir) = plain
  twice = _encoder_run(tiny, tmp_path / "twice", translators[(1, 2)], mix=((((1, 2),), translators[(1, 2)]),))
  assert [r["surrogate"] for r in twice] == [0, 1, 0, 1] and "surrogate" not in plain[0]
  np.testing.assert_allclose([r["loss"] for r in twice], [r["loss"] for r in plain], rtol=1e-6)
  a = load_encoder_package(str(plain_dir / "encoder_package"))
  b = load_encoder_package(str(tmp_path / "twice" / "encoder_package"))
  for x, y in zip(np.asarray(a[0]["proj"]["soi"]).ravel(), np.asarray(b[0]["proj"]["soi"]).ravel()):
    assert abs(x - y) <= 1e-6
  assert b[1]["mix"] == [[[1, 2]]] and "mix" not in a[1]


def test_odd_steps_run_against_the_second_surrogate(tiny, translators, plain, tmp_path):
  plain = plain[0]
  mixed = _encoder_run(tiny, tmp_path / "mixed", translators[(1, 2)], mix=((((2, 2),), translators[(2, 2)]),))
  assert mixed[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-6)  # step 0: surrogate 0, the same start
  assert abs(mixed[1]["loss"] - plain[1]["loss"]) > 1e-4                # step 1: the [2, 2] surrogate
  assert [r["surrogate"] for r in mixed] == [0, 1, 0, 1]


def test_bad_mixes_are_refused_before_training(tiny, translators, tmp_path):
  with pytest.raises(ValueError, match="plan"):  # a translator trained for [1, 2] given as the [2, 2] surrogate
    _encoder_run(tiny, tmp_path / "a", translators[(1, 2)], mix=((((2, 2),), translators[(1, 2)]),))
  with pytest.raises(ValueError, match="mix entry"):
    _encoder_run(tiny, tmp_path / "b", translators[(1, 2)], mix=((((2, 2),),),))
  config = tiny_config("pretrain", tiny, tmp_path / "c", steps=2)  # stage 1 trains the translator too
  config.init_from, config.mix = translators[(1, 2)], ((((2, 2),), translators[(2, 2)]),)
  with pytest.raises(ValueError, match="encoder side only"):
    train(config)
  config = tiny_config("translator", tiny, tmp_path / "d", steps=2)  # text only
  config.mix = ((((2, 2),), translators[(2, 2)]),)
  with pytest.raises(ValueError, match="needs a stage with images"):
    train(config)
  assert not (tmp_path / "c" / "checkpoints").exists() and not (tmp_path / "d" / "checkpoints").exists()


def test_the_saving_of_a_mix_is_the_mean_over_its_surrogates():
  llm = preset("smollm2-135m")
  plan = lambda a: SurrogatePlan.create(llm.num_layers, [(a, 28)])
  alone = {a: mix_flops_saved(llm, [plan(a)]) for a in (12, 19, 26, 28)}
  assert alone[28] == pytest.approx(0.0, abs=1e-9) and alone[19] == pytest.approx(0.2586, abs=1e-3)
  assert mix_flops_saved(llm, [plan(12), plan(26)]) == pytest.approx((alone[12] + alone[26]) / 2, rel=1e-9)


def test_main_job_trains_a_translator_per_plan_and_alternates_stage2(tiny, tmp_path):
  from graft_jax.main import run_task  # pylint: disable=g-import-not-at-top
  from tests.config_files import load_config  # pylint: disable=g-import-not-at-top
  config = load_config("surrogate")
  config.model.source, config.data = tiny
  config.model.remat_policy = "none"
  config.run_dir, config.out_dir = str(tmp_path / "route"), str(tmp_path / "results")
  config.vit.update({"image_size": 16, "patch_size": 8, "width": 24, "depth": 2, "heads": 2, "mlp_dim": 48})
  config.ranges, config.mix_ranges = ((1, 2),), (((2, 2),),)
  config.steps = {"translator": 2, "pretrain": 0, "encoder": 4, "adapter": 0, "transfer": 0}
  config.encoder_pretrain.steps = 0
  config.translator_fit.sequences = 8
  config.batch_size, config.num_eval_chats = 8, 4
  config.eval.update({"limit": 2, "batch_size": 2, "max_new_tokens": 2})
  config.conditions = ("surrogate",)
  config.refresh.rounds = 1
  with pytest.raises(ValueError, match="mix_ranges does not combine"):
    run_task(config)
  config.refresh.rounds = 0
  result = run_task(config)
  from graft_jax.convert.load import load_model  # pylint: disable=g-import-not-at-top
  _, llm_config = load_model(tiny[0])
  plans = [SurrogatePlan.create(4, [(1, 2)]), SurrogatePlan.create(4, [(2, 2)])]
  assert result["flops_saved_per_token"] == pytest.approx(mix_flops_saved(llm_config, plans))
  assert result["mix"]["flops_saved_main_plan"] > result["flops_saved_per_token"] > 0
  assert result["fidelity"]["mix1"] > 0 and (tmp_path / "route" / "translator_mix1" / "checkpoints").is_dir()
  stage2 = read_metrics(str(tmp_path / "route" / "seed0" / "encoder_surrogate"))
  assert [r["surrogate"] for r in stage2] == [0, 1, 0, 1]
  assert "alternates with keep 0-1, translator 2, keep 3" in result["setup"]
  # (a)'s encoder is scored on the added surrogate too, and the report labels that row
  assert result["per_seed"]["0"]["a_on_mix1"]["overall"]["n"] == 2 and "a_on_mix1" in result["summary"]
  assert "evaluated on the mix's surrogate 1" in (tmp_path / "results" / "results.md").read_text()
