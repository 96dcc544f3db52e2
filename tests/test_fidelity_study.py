"""The fidelity study's driver: cell configs and shared runs, a cell's measures on a tiny random
model (no training), the report from a fake cells.json; and, with GRAFT_JAX_SLOW_TESTS=1, one cell
end to end on a tiny decoder with SmolLM2's tokenizer and tiny data (~2 min on the 2-core CPU)."""
from __future__ import annotations

import json
import os

import pytest

from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.reproduction import runs
from graft_jax.fidelity_study import cells as cells_lib
from graft_jax.fidelity_study import driver, report, sharing
from graft_jax.fidelity_study.measure import MeasureSettings
from graft_jax.models.presets import preset
from tests.config_files import load_config
from tests.tiny_vlm import build_tiny

TINY_VIT = {"image_size": 16, "patch_size": 8, "width": 24, "depth": 2, "heads": 2, "mlp_dim": 48}


def _study_base():
  return cells_lib.study_job(load_config("surrogate", "full"))


def test_cells_change_only_their_settings(tmp_path):
  base = _study_base()
  cells = {c.name: c for c in cells_lib.default_cells()}
  assert [n for n, c in cells.items() if c.axis == "range start"] == ["a19", "a22", "a24", "a26", "a28"]
  job = cells_lib.cell_job(base, cells["a26"], str(tmp_path))
  assert job.ranges == ((26, 28),) and job.seeds == (0, 1, 2) and job.conditions == ("surrogate", "target")
  assert job.steps.translator == 600 and job.translator_objective == "hidden" and job.steps.transfer == 0
  assert job.run_dir == str(tmp_path / "a26") and job.out_dir == str(tmp_path / "a26" / "results")
  assert job.vit.output_norm == "none" and base.vit.output_norm == "none"
  changed = {name: cells_lib.cell_job(base, cells[name], str(tmp_path)) for name in
             ("a19_ce", "a19_cekl", "a19_fit150", "a19_stage1", "a19_stage1kl", "a19_stage1klall", "a18x2", "a19_norm", "a19_enc150",
              "a19_refresh2", "a19_noise", "a19_statpen", "a19_vit8")}
  assert changed["a19_refresh2"].refresh.rounds == 2 and job.refresh.rounds == 0
  assert changed["a19_ce"].translator_objective == "ce" and changed["a19_ce"].lr.translator == 3e-4
  assert changed["a19_ce"].translator_kl_weight == 0.0 and changed["a19_cekl"].translator_kl_weight == 1.0
  assert changed["a19_fit150"].steps.translator == 150 and changed["a19_fit150"].translator_objective == "hidden"
  assert changed["a19_stage1"].steps.pretrain == 60 and changed["a19_enc150"].steps.encoder == 150
  assert changed["a19_norm"].vit.output_norm == "rms_token_scale"
  # stage 1 anchored by KL on the text chats reaches the stage-1 run's train config; plain stage 1 is not
  anchored = runs.pretrain_config(changed["a19_stage1kl"], 0, "t")
  plain = runs.pretrain_config(changed["a19_stage1"], 0, "t")
  assert changed["a19_stage1kl"].steps.pretrain == 60
  assert (anchored.train.kl_weight, anchored.train.kl_rows) == (1.0, "text") and plain.train.kl_weight == 0.0
  assert runs.pretrain_config(changed["a19_stage1klall"], 0, "t").train.kl_rows == "all"
  assert changed["a18x2"].ranges == ((18, 28, 2),)  # two translator layers, the same 8 layers cut as a19
  # the noise reaches stage 2 against the surrogate only: (c), on the target, stays the shared baseline
  noisy = changed["a19_noise"]
  assert runs.encoder_config(noisy, 0, "surrogate", "t").train.image_noise == 0.5
  assert runs.encoder_config(noisy, 0, "target", "").train.image_noise == 0.0
  assert runs.encoder_config(job, 0, "surrogate", "t").train.image_noise == 0.0
  penalised = changed["a19_statpen"]
  assert runs.encoder_config(penalised, 0, "surrogate", "t").train.embed_penalty == 1.0
  assert runs.encoder_config(penalised, 0, "target", "").train.embed_penalty == 0.0
  assert runs.encoder_config(job, 0, "surrogate", "t").train.embed_penalty == 0.0
  # two surrogates at once: [12, 28] and [26, 28]; the mix reaches stage 2 against the surrogate only
  mixed = cells_lib.cell_job(base, cells["a12_mix26"], str(tmp_path))
  assert mixed.ranges == ((12, 28),) and mixed.mix_ranges == (((26, 28),),) and job.mix_ranges == ()
  mix = ((((26, 28),), "t26"),)
  assert runs.encoder_config(mixed, 0, "surrogate", "t", mix=mix).mix == mix
  assert runs.encoder_config(mixed, 0, "target", "", mix=mix).mix == ()
  assert sharing.shared_dirs(noisy, str(tmp_path))["target"] == sharing.shared_dirs(changed["a19_ce"], str(tmp_path))["target"]
  # a deeper encoder is pretrained into its own directory, and (c) is trained with it (not shared)
  deeper = changed["a19_vit8"]
  assert deeper.vit.depth == 8 and job.vit.depth == 4
  assert deeper.encoder_pretrain.dir == job.encoder_pretrain.dir + "_depth8"
  assert sharing.shared_dirs(deeper, str(tmp_path))["target"] != sharing.shared_dirs(job, str(tmp_path))["target"]
  with pytest.raises(ValueError, match="outside"):
    cells_lib.cell_job(base, cells_lib.Cell("bad", 29), str(tmp_path))
  with pytest.raises(ValueError, match="Unknown cell"):
    cells_lib.find_cell(list(cells.values()), "a99")


def test_shared_runs_are_linked_once_per_setting(tmp_path):
  base, root = _study_base(), str(tmp_path)
  cells = {c.name: c for c in cells_lib.default_cells()}
  jobs = {n: cells_lib.cell_job(base, cells[n], root) for n in ("a19", "a19_norm", "a19_ce", "a22", "a26", "a12_mix26")}
  dirs = {n: sharing.link_shared_runs(j, root) for n, j in jobs.items()}
  assert dirs["a19"]["translator"] == dirs["a19_norm"]["translator"] != dirs["a19_ce"]["translator"]
  assert dirs["a19"]["translator"] != dirs["a22"]["translator"]
  assert dirs["a22"]["target"] == dirs["a19_ce"]["target"] == dirs["a26"]["target"] != dirs["a19_norm"]["target"]
  real = lambda *p: os.path.realpath(os.path.join(*p))
  assert real(root, "a19", "translator") == real(root, "a19_norm", "translator") == real(dirs["a19"]["translator"])
  assert real(root, "a26", "seed2", "encoder_target") == real(dirs["a22"]["target"], "seed2")
  # a mix's further translator is the translator of the cell with that plan
  assert real(root, "a12_mix26", "translator_mix1") == real(dirs["a26"]["translator"])
  assert dirs["a12_mix26"]["translator"] not in (dirs["a26"]["translator"], dirs["a19"]["translator"])
  rematted = cells_lib.cell_job(base, cells["a19"], root)
  rematted.model.remat_policy = "full"  # memory and speed only: the same shared runs
  assert sharing.shared_dirs(rematted, root) == sharing.shared_dirs(jobs["a19"], root)
  # (c)'s score is handed to the next cell with the same target run, though the main job pointed
  # the cell's vit.source at the pretrained encoder meanwhile
  jobs["a22"].vit.source = "runs/vision_encoder"
  assert sharing.shared_dirs(jobs["a22"], root)["target"] != dirs["a22"]["target"]
  os.makedirs(os.path.join(root, "a22", "scores"))
  with open(os.path.join(root, "a22", "scores", "seed0_c.json"), "w") as f:
    json.dump({"scores": 1}, f)
  sharing.share_scores(jobs["a22"], dirs["a22"])
  sharing.link_shared_runs(jobs["a26"], root)
  assert os.path.exists(os.path.join(root, "a26", "scores", "seed0_c.json"))
  assert not os.path.exists(os.path.join(root, "a19_norm", "scores", "seed0_c.json"))
  listing = driver.listing(base, list(cells.values()), root, preset("smollm2-135m"))
  from graft_jax.fidelity_study.estimate import cell_seconds  # pylint: disable=g-import-not-at-top
  seconds = {n: cell_seconds(cells_lib.cell_job(base, cells[n], root), preset("smollm2-135m"))
             for n in ("a12_mix26", "a19", "a26")}
  # the mix's stage 2 costs what the mean of its two surrogates does (about a19's), plus a second stage 0
  assert seconds["a12_mix26"]["encoder_surrogate"] == pytest.approx(seconds["a19"]["encoder_surrogate"], rel=0.1)
  assert seconds["a12_mix26"]["translator"] > 1.5 * seconds["a19"]["translator"]
  assert listing.count("min alone") == len(cells) == 20 and "h on 2 CPU cores" in listing


def test_cell_measures_on_a_tiny_random_model():
  """measure.text_measures / image_measures, as measure_cell calls them, without any training."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from graft_jax.fidelity_study.measure import image_measures, text_measures  # pylint: disable=g-import-not-at-top
  from graft_jax.surrogate import SurrogatePlan, encoder_side, make_surrogate  # pylint: disable=g-import-not-at-top
  from tests.test_fidelity_measures import LLM, _image_batch, _target  # pylint: disable=g-import-not-at-top
  model, params = _target()
  tokenizer = load_tokenizer()
  chats = [np.random.default_rng(i).integers(0, 50, size=9 + 3 * i).astype(np.int32) for i in range(4)]
  batch = _image_batch()
  plan = SurrogatePlan.create(6, [(1, 4)])
  surrogate = make_surrogate(params["llm"], plan)
  text = text_measures(params["llm"], surrogate, LLM, plan, chats, 2, 0)
  image = image_measures(model, encoder_side(params), params["llm"], surrogate, plan, [batch, batch], tokenizer, 3)
  assert all(v > 0 for v in (text["kl"], text["rel_l2"], image["kl"], image["rel_l2"], image["rel_l2_image"]))
  assert 0 < text["cos"] < 1 and 0 < image["cos"] < 1
  stats = image["embeddings"]
  assert len(stats["nearest_tokens"]) <= 3 and stats["nearest_tokens"][0]["id"] == stats["nearest_ids"][0][0]
  assert sum(c for _, c in stats["nearest_ids"]) <= 2 * 3 * model.vit.num_tokens
  assert 0 < stats["nearest_cos"] <= 1 and jax.numpy.isfinite(stats["mean_direction_cos"])


def _fake_record(cell, base, root, graft, target, text_kl):
  job = cells_lib.cell_job(base, cell, root)
  acc = lambda m: {"overall": {"mean": m, "std": 0.01, "min": m, "max": m, "n": 3}, "by_type": {"color": {"mean": m}}}
  results = {"summary": {"a_surrogate_on_surrogate": acc(0.9), "b_surrogate_grafted": acc(graft),
                         "c_target_on_target": acc(target)},
             "flops_saved_per_token": 1 - (cell.start + 2) / 30,
             "plan": {"description": "keep ...", "num_layers": 30,
                      "segments": [["blocks_0", "keep", list(range(cell.start))],
                                   ["translator_0", "translator", [cell.start]], ["blocks_1", "keep", [29]]]}}
  image = {"kl": 2 * text_kl, "rel_l2": 0.3, "cos": 0.9, "rel_l2_image": 0.4, "cos_image": 0.8,
           "embeddings": {"norm_ratio": 1.5, "image_rms": 0.1, "token_rms": 0.07, "mean_direction_cos": 0.2,
                          "nearest_cos": 0.3, "nearest_ids": [[5, 3]],
                          "nearest_tokens": [{"id": 5, "count": 3, "token": "x"}]}}
  measures = {"text": {"untrained": {"kl": 20.0, "rel_l2": 1.0, "cos": 0.5},
                       "translator": {"kl": text_kl, "rel_l2": 0.2, "cos": 0.95}},
              "image": {str(s): {"surrogate_encoder": image, "target_encoder": image} for s in (0, 1, 2)},
              "flops_saved_short": 0.9 * (1 - (cell.start + 2) / 30)}
  return report.cell_record(cell, job, results, measures, 12.0)


def test_report_from_a_fake_cells_json(tmp_path):
  base, root = _study_base(), str(tmp_path / "runs")
  cells = cells_lib.default_cells()
  path = str(tmp_path / "results" / "cells.json")
  for cell, graft in zip(cells, (0.8, 0.8, 0.85, 0.9, 0.95, 0.2, 0.3, 0.5, 0.4, 0.42, 0.41, 0.6, 0.45, 0.43, 0.3, 0.44, 0.35, 0.5, 0.36, 0.7),
                         strict=True):
    report.save_cell(path, _fake_record(cell, base, root, graft, 0.85, 3.0 - 2.5 * graft))
  loaded = report.load_cells(path)
  assert list(loaded) == [c.name for c in cells]
  # a19: 0.8 / 0.85 of (c) saving 30%; a22 grafts as well and saves 20%, a26 7%: only a19 meets the bar.
  assert [n for n, r in loaded.items() if r["meets_bar"]] == ["a19"]
  assert loaded["a22"]["layers_kept"] == 24 and loaded["a19_norm"]["changes"] == {"output_norm": "rms_token_scale"}
  markdown = report.write_report(str(tmp_path / "results"), loaded)
  assert markdown.count("\n| a") == 20 and "| a26 | range start: - | [26, 28] (28/30) | 6.7% (6.0%) |" in markdown
  for name in ("table.md", *report.PLOTS):
    assert os.path.getsize(tmp_path / "results" / name) > 0


def test_a_pilot_on_fewer_seeds_writes_its_own_table(tmp_path, capsys):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "fidelity_study.py")
  spec = importlib.util.spec_from_file_location("fidelity_study_script", path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  script.main(["--seeds", "0", "--list", "--root", str(tmp_path / "runs")])
  assert "seeds run (0,)" in capsys.readouterr().out
  script.main(["--frontier", "--list", "--root", str(tmp_path / "runs")])
  frontier = capsys.readouterr().out
  assert frontier.count("min alone") == 5 and "a22 " in frontier and "a19_norm" not in frontier
  results = tmp_path / "results"
  base = _study_base()
  base.seeds = (0,)
  report.save_cell(str(results / "pilot_seeds0" / "cells.json"),
                   _fake_record(cells_lib.default_cells()[2], base, str(tmp_path / "runs"), 0.3, 0.5, 1.0))
  script.main(["--seeds", "0", "--report", "--results", str(results)])
  assert (results / "pilot_seeds0" / "table.md").exists() and not (results / "table.md").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(model dir, VQA data config): a 4-layer decoder over SmolLM2's vocabulary, tiny datasets."""
  return build_tiny(tmp_path_factory.mktemp("tiny_study"), load_config("surrogate").data, n_train=16)


@pytest.mark.skipif(not os.environ.get("GRAFT_JAX_SLOW_TESTS"), reason="~2 min; set GRAFT_JAX_SLOW_TESTS=1")
def test_one_cell_end_to_end_on_a_tiny_model(tiny, tmp_path):
  model_dir, data = tiny
  base = load_config("surrogate")
  base.model.source, base.data = model_dir, data
  base.vit.update(TINY_VIT)
  base.ranges = ((1, 2),)
  base.seeds = (0,)
  base.steps = {"translator": 2, "pretrain": 0, "encoder": 2, "adapter": 0, "transfer": 0}
  base.translator_fit.sequences = 16
  base.encoder_pretrain.update({"steps": 2, "batch_size": 4, "scenes": 8, "dir": str(tmp_path / "vision")})
  base.batch_size, base.num_eval_chats = 8, 4
  base.eval.update({"limit": 4, "batch_size": 4, "max_new_tokens": 2})
  root, results = str(tmp_path / "runs"), str(tmp_path / "results")
  cell = cells_lib.Cell("a1_norm", 1, "output norm", output_norm="rms_token_scale")
  record = driver.run_cell(base, cell, root, results, MeasureSettings(images=4, batch_size=4))
  assert record["plan"] == "keep 0, translator 1, drop 2, keep 3" and record["layers_kept"] == 3
  assert 0 < record["flops_saved_short"] < 0.25
  assert set(record["accuracy"]) == {"surrogate", "graft", "target", "target_on_surrogate"}
  fid = record["fidelity"]
  assert fid["text_kl_untrained"] > 0 and fid["image_kl"] > 0 and 0 < fid["text_rel_l2"] and fid["image_cos"] <= 1
  emb = record["embedding"]["surrogate_encoder"]
  assert abs(emb["image_rms"] / emb["token_rms"] - 1) < 1e-3  # the output norm holds after training
  assert emb["nearest_tokens_seed0"] and isinstance(emb["nearest_tokens_seed0"][0]["token"], str)
  for name in ("cells.json", "table.md", *report.PLOTS):
    assert os.path.exists(os.path.join(results, name))
  with open(os.path.join(root, "a1_norm", "seed0", "encoder_surrogate", "encoder_package", "package.json")) as f:
    package = json.load(f)
  assert package["encoder_config"]["output_norm"] == "rms_token_scale"
  assert os.path.islink(os.path.join(root, "a1_norm", "translator"))


def test_a_resumed_cell_keeps_its_earlier_seconds():
  assert report.cell_seconds_so_far(None, 80.0) == 80.0
  assert report.cell_seconds_so_far({"seconds": 900.0}, 80.0) == 980.0
