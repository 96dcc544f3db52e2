"""Runs shared between cells: the same training is done once.

Two runs of a cell depend on only part of its settings:
- the translator (stage 0) on the plan, data, batch, steps, lr and KL weight; not on the encoder
  (a mix's further translators, translator_mix<i>/, are those of cells with that plan);
- the encoder trained directly on the full target (c) on the encoder side, data, batch, encoder
  steps and lr, per seed (and its score on the evaluation settings); not on the surrogate at all.
Each is trained once under root/_shared/<kind>-<hash of those settings>/ and every cell's run
directory links to it (a relative symlink), so the main job resumes the finished run (no steps
left) instead of retraining. The (c) score files are shared too: copied into a cell's score
directory before it runs, and back after, so the main job reads them from its cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import ml_collections

from graft_jax.reproduction import runs


def _key(settings: dict) -> str:
  return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _model_settings(job: ml_collections.ConfigDict) -> dict:
  """The model block without its remat policy, which changes memory and speed, not results."""
  return {k: v for k, v in job.model.to_dict().items() if k != "remat_policy"}


def translator_settings(job: ml_collections.ConfigDict) -> dict:
  return {"model": _model_settings(job), "template": job.template, "ranges": [list(r) for r in job.ranges],
          "data": job.data.to_dict(), "batch_size": job.batch_size, "steps": job.steps.translator,
          "lr": job.lr.translator, "kl_weight": job.translator_kl_weight,
          "objective": job.translator_objective, "fit": job.translator_fit.to_dict()}


def target_settings(job: ml_collections.ConfigDict) -> dict:
  return {"model": _model_settings(job), "template": job.template, "vit": job.vit.to_dict(),
          "data": job.data.to_dict(), "batch_size": job.batch_size, "steps": job.steps.encoder,
          "lr": job.lr.encoder, "eval": job.eval.to_dict()}  # eval: the shared (c) scores


def _mix_jobs(job: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The job as it would be with each of its mix_ranges as its plan: what its translator depends on."""
  out = []
  for ranges in job.get("mix_ranges", ()):
    other = job.copy_and_resolve_references()
    other.ranges = tuple(tuple(r) for r in ranges)
    out.append(other)
  return out


def shared_dirs(job: ml_collections.ConfigDict, root: str) -> dict[str, str]:
  """{"translator": dir, "target": dir, "translator_mix<i>": dir of each mix plan's translator}
  of the cell job's shared runs under root/_shared."""
  shared = os.path.join(root, "_shared")
  dirs = {"translator": os.path.join(shared, f"translator-{_key(translator_settings(job))}"),
          "target": os.path.join(shared, f"target-{_key(target_settings(job))}")}
  for i, other in enumerate(_mix_jobs(job)):
    dirs[f"translator_mix{i + 1}"] = os.path.join(shared, f"translator-{_key(translator_settings(other))}")
  return dirs


def _link(link: str, target: str) -> None:
  os.makedirs(target, exist_ok=True)
  os.makedirs(os.path.dirname(link), exist_ok=True)
  if os.path.islink(link):
    if os.path.realpath(link) == os.path.realpath(target):
      return
    raise FileExistsError(f"{link} links to {os.readlink(link)}, not {target}; the cell's settings changed: "
                          "delete the cell's run directory to rerun it")
  if os.path.exists(link):
    raise FileExistsError(f"{link} exists and is not a link to the shared run {target}")
  os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def _write_settings(directory: str, settings: dict) -> None:
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "settings.json")
  if not os.path.exists(path):
    with open(path, "w") as f:
      json.dump(settings, f, indent=1, default=str)


def _score_name(seed: int) -> str:
  return f"seed{seed}_c.json"


def link_shared_runs(job: ml_collections.ConfigDict, root: str) -> dict[str, str]:
  """Links the cell's translator/ and seed<s>/encoder_target/ to the shared runs and copies the
  shared (c) scores into the cell's scores/. Returns shared_dirs(job, root)."""
  dirs = shared_dirs(job, root)
  _link(os.path.join(job.run_dir, "translator"), dirs["translator"])
  _write_settings(dirs["translator"], translator_settings(job))
  for i, other in enumerate(_mix_jobs(job)):  # a mix plan's translator is the cell of that plan's
    name = f"translator_mix{i + 1}"
    _link(os.path.join(job.run_dir, name), dirs[name])
    _write_settings(dirs[name], translator_settings(other))
  _write_settings(dirs["target"], target_settings(job))
  for seed in job.seeds:
    _link(os.path.join(runs.seed_dir(job, seed), runs.CONDITION_DIRS["target"]),
          os.path.join(dirs["target"], f"seed{seed}"))
    shared_score = os.path.join(dirs["target"], "scores", _score_name(seed))
    cell_score = os.path.join(job.run_dir, "scores", _score_name(seed))
    if os.path.exists(shared_score) and not os.path.exists(cell_score):
      os.makedirs(os.path.dirname(cell_score), exist_ok=True)
      shutil.copyfile(shared_score, cell_score)
  return dirs


def share_scores(job: ml_collections.ConfigDict, dirs: dict[str, str]) -> None:
  """After a cell ran: its (c) scores become the shared ones in dirs["target"] (when not there
  yet). `dirs` is what link_shared_runs returned before the run: the main job sets
  job.vit.source to the pretrained encoder, so shared_dirs(job) computed after it would differ."""
  for seed in job.seeds:
    cell_score = os.path.join(job.run_dir, "scores", _score_name(seed))
    shared_score = os.path.join(dirs["target"], "scores", _score_name(seed))
    if os.path.exists(cell_score) and not os.path.exists(shared_score):
      os.makedirs(os.path.dirname(shared_score), exist_ok=True)
      shutil.copyfile(cell_score, shared_score)
