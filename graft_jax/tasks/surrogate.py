"""The main job: the reproduction of zero-shot grafting on the embedded default (method.md 6-7).

For the plan in `ranges`:
1. the surrogate's fidelity untrained (a plain truncation) and after stage 0 (translator on text):
   KL(target || surrogate) of next-token distributions on held-out chats;
2. per seed, stage 2 trained three ways, the same steps and samples each: against the surrogate
   (a: scored on the surrogate; b: grafted zero-shot onto the full target), directly on the full
   target (c), against the plain truncation (d, grafted); and an untrained encoder (e);
   With `mix_ranges`, stage 0 also trains a translator for each of those plans, and the encoder
   of (a)/(b) alternates steps between all the surrogates (train/mix.py); (a) is scored on the
   surrogate of `ranges` and, as a_on_mix<i>, on each added one; the FLOPs saved are the mean
   over the surrogates; (d) trains against the plain truncation of `ranges` alone;
3. optionally (f) transfer: stage 3 on the full target from the graft vs from an adapter-only
   start, scored along the way against cumulative training compute (with a mix, the graft route
   counts every surrogate's stage 0 and each stage-2 step at its own surrogate's cost).
Scores are greedy answers on the held-out test split, per question type. Every run is a resumable
run directory under run_dir and every score is cached there, so a rerun continues where it stopped.
Writes out_dir/results.{json,md}, transfer.png and examples.png.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import numpy as np

from graft_jax.cost import decoder_cost
from graft_jax.data.padding import right_pad
from graft_jax.data.readers import read_llava_json
from graft_jax.fidelity import next_token_kl
from graft_jax.fidelity_data import HELD_OUT_CHATS, chat_token_ids
from graft_jax.models.vlm import VLM
from graft_jax.reproduction import report, runs
from graft_jax.reproduction.answer_prior import answer_prior_scores
from graft_jax.reproduction.refresh import surrogate_llm, surrogate_route
from graft_jax.reproduction.scoring import ZERO, RunCompute, Scorer, run_compute, train_flops_per_token
from graft_jax.surrogate import SurrogatePlan, make_surrogate
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.train.checkpoint import RunCheckpointer, load_encoder_package
from graft_jax.train.data_setup import ensure_default_datasets
from graft_jax.train.loop import train
from graft_jax.train.mix import mix_flops_saved, plans_of
from graft_jax.translator_fit import run_translator_fit, text_pairs
from graft_jax.train.model_setup import load_previous_stage, starting_encoder, vit_from_config
from graft_jax.vision_pretrain.train import run_vision_pretrain
from graft_jax.train.partition import merge, split

ENCODER_CONDITIONS = ("surrogate", "target", "truncation", "untrained")


def text_kl(config, target: dict, surrogate: dict, plan: SurrogatePlan, llm_config, tokenizer) -> float:
  """Mean KL(target || surrogate) in nats per token on `num_eval_chats` held-out chats."""
  samples = chat_sequences(config, tokenizer, HELD_OUT_CHATS, config.num_eval_chats)
  kls = []
  for i in range(0, len(samples), config.eval.batch_size):
    ids, mask = right_pad(samples[i:i + config.eval.batch_size], llm_config.pad_token_id or 0)
    kls.append(next_token_kl(target, surrogate, llm_config, plan.segments, ids, mask))
  return float(np.concatenate(kls).mean())


def chat_sequences(config, tokenizer, split_index: int, count: int) -> list[np.ndarray]:
  """Token ids of the first `count` synthetic chats of split `split_index` (0 train, 1 held out)."""
  return chat_token_ids(tokenizer, config.template, config.data.seed, split_index, count)


def stage0(config, target: dict, truncation: dict, llm_config, tokenizer, plan: SurrogatePlan,
           run_dir: str | None = None) -> dict:
  """Trains the translator (stage 0) of `plan` into `run_dir` (default run_dir/translator) as
  `config.translator_objective` says: "hidden" fits it to the target's hidden states
  (graft_jax/translator_fit.py), "ce" trains it with cross-entropy (plus KL distillation if
  translator_kl_weight > 0) through the surrogate's head. Returns {"run_dir", ...the fit's record for "hidden"}."""
  run_dir = run_dir or os.path.join(config.run_dir, "translator")
  if config.translator_objective == "ce":
    ranges = tuple((r.start, r.end, r.num_translators) for r in plan.ranges)
    return {"run_dir": train(runs.translator_config(config, run_dir, ranges))["run_dir"]}
  if config.translator_objective != "hidden":
    raise ValueError(f"Unknown translator_objective {config.translator_objective!r}; choose 'hidden' or 'ce'")
  make_pairs = text_pairs(target, llm_config, plan, chat_sequences(config, tokenizer, 0, config.translator_fit.sequences),
                          chat_sequences(config, tokenizer, HELD_OUT_CHATS, 64), config.batch_size)
  init = {n: truncation["segments"][n] for n in plan.translator_segments}
  return run_translator_fit(run_dir, config, plan, llm_config, init, make_pairs,
                            steps=config.steps.translator, lr=config.lr.translator)


def prepare_encoder(config) -> dict | None:
  """Pretrains the encoder on labelled scenes (graft_jax/vision_pretrain) into encoder_pretrain.dir,
  or reuses it there, and points vit.source at it, so every stage starts from it. Nothing when
  vit.source is already set (the user's own encoder) or encoder_pretrain.steps is 0 (from scratch).
  -> the pretraining summary, or None."""
  p = config.encoder_pretrain
  if config.vit.source or not p.steps:
    return None
  summary = run_vision_pretrain(p.dir, vit_from_config(config.vit), steps=p.steps, batch_size=p.batch_size,
                                lr=p.lr, seed=p.seed, scenes=p.scenes)
  config.vit.source = p.dir
  shown = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in summary["eval"].items())
  print(f"Encoder pretrained on {p.scenes} labelled scenes ({p.steps} steps, {summary['seconds']:.0f} s): "
        f"held-out accuracy {shown}")
  return summary


def cached(path: str, compute: Callable[[], Any]) -> Any:
  """compute()'s JSON-able result, stored at `path` and read back on reruns."""
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  value = compute()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f, indent=1)
  return value


def trained_llm(llm: dict, plan: SurrogatePlan | None, run_dir: str) -> dict:
  """The decoder params of a run: `llm` with the run's trained decoder weights written over it."""
  return load_previous_stage({"llm": llm}, plan, run_dir)["llm"]


def package_of(run_dir: str) -> dict:
  return load_encoder_package(os.path.join(run_dir, "encoder_package"))[0]


def run(config) -> dict:
  unknown = set(config.conditions) - set(ENCODER_CONDITIONS)
  if unknown:
    raise ValueError(f"Unknown conditions {sorted(unknown)}; choose from {ENCODER_CONDITIONS}")
  if config.get("mix_ranges") and config.refresh.rounds:
    raise ValueError("mix_ranges does not combine with refresh.rounds > 0: a refit serves one surrogate; "
                     "set one of them to its default")
  target, llm_config, tokenizer = load_from_config(config.model)
  plan = SurrogatePlan.create(llm_config.num_layers, [tuple(r) for r in config.ranges])
  mix_plans = plans_of(llm_config.num_layers, config.get("mix_ranges", ()))
  truncation = make_surrogate(target, plan)
  full_cost, sur_cost = decoder_cost(llm_config), decoder_cost(llm_config, plan.segments)
  saved = 1 - sur_cost.fwd_flops_per_token / full_cost.fwd_flops_per_token
  mix_saved = mix_flops_saved(llm_config, [plan, *mix_plans])  # = saved without a mix
  mixed = "" if not mix_plans else (
      f"; stage 2 alternates with {', '.join(p.describe() for p in mix_plans)}: {mix_saved:.1%} fewer on average")
  setup = (f"Plan: {plan.describe()} ({sur_cost.layers} of {full_cost.layers} layers, "
           f"{sur_cost.params / 1e6:.1f}M of {full_cost.params / 1e6:.1f}M parameters, {saved:.1%} fewer decoder "
           f"FLOPs per token{mixed}). Seeds {tuple(config.seeds)}; stage 0 {config.steps.translator} steps, stage 1 "
           f"{config.steps.pretrain}, stage 2 {config.steps.encoder} steps of {config.batch_size} samples; encoder "
           + (f"from {config.vit.source}" if config.vit.source else
              f"pretrained on labelled scenes ({config.encoder_pretrain.steps} steps)" if config.encoder_pretrain.steps
              else "from scratch") + ".")
  print(setup)
  ensure_default_datasets(config.data)
  encoder_pretrain = prepare_encoder(config)
  eval_file = os.path.join(config.data.out_dir, "shapes", "test.json")
  samples, _ = read_llava_json(eval_file, image_check="exists")
  samples = samples[:config.eval.limit] if config.eval.limit else samples
  vit = vit_from_config(config.vit)
  scorer = Scorer(samples, tokenizer, config.template, llm_config, vit, config.vit.projector_depth,
                  end_token_ids(tokenizer, llm_config), config.eval.batch_size, config.eval.max_new_tokens)
  score_dir = os.path.join(config.run_dir, "scores")

  def score(name: str, encoder: Callable[[], dict], llm: dict, segments) -> dict:
    def compute():
      scores, records = scorer(encoder(), llm, segments)
      return {"scores": scores, "answers": [r["prediction"] for r in records]}
    result = cached(os.path.join(score_dir, f"{name}.json"), compute)
    print(f"  {name}: accuracy {result['scores']['overall']['accuracy']:.3f}")
    return result

  if mix_plans:  # the encoder's training saves the mean over the surrogates it alternates between
    mix_record = {"plans": [p.to_dict() for p in mix_plans], "flops_saved_main_plan": saved}
    saved = mix_saved
  results: dict[str, Any] = {"setup": setup, "plan": plan.to_dict(), "flops_saved_per_token": saved,
                             "target_params": full_cost.params, "surrogate_params": sur_cost.params,
                             "encoder_pretrain": encoder_pretrain, "config": config.to_dict()}
  fidelity = {"untrained": cached(os.path.join(score_dir, "kl_untrained.json"),
                                  lambda: text_kl(config, target, truncation, plan, llm_config, tokenizer))}
  stage0_run = stage0(config, target, truncation, llm_config, tokenizer, plan)
  translator_dir = stage0_run["run_dir"]
  surrogate = trained_llm(truncation, plan, translator_dir)
  fidelity["translator"] = cached(os.path.join(score_dir, "kl_translator.json"),
                                  lambda: text_kl(config, target, surrogate, plan, llm_config, tokenizer))
  print(f"KL(target || surrogate) on held-out text: untrained {fidelity['untrained']:.3f}, "
        f"after stage 0 {fidelity['translator']:.3f} nats/token")
  mix, mix_llms, mix_fits = [], [], []  # per further surrogate: (ranges, translator run dir), its decoder, its stage 0
  for i, mix_plan in enumerate(mix_plans):
    mix_truncation = make_surrogate(target, mix_plan)
    mix_run = stage0(config, target, mix_truncation, llm_config, tokenizer, mix_plan,
                     os.path.join(config.run_dir, f"translator_mix{i + 1}"))
    mix_surrogate = trained_llm(mix_truncation, mix_plan, mix_run["run_dir"])
    fidelity[f"mix{i + 1}"] = cached(os.path.join(score_dir, f"kl_translator_mix{i + 1}.json"),
                                     lambda: text_kl(config, target, mix_surrogate, mix_plan, llm_config, tokenizer))
    print(f"  mix surrogate {i + 1} ({mix_plan.describe()}): KL after stage 0 {fidelity[f'mix{i + 1}']:.3f}")
    mix.append((tuple(config.mix_ranges[i]), mix_run["run_dir"]))
    mix_llms.append(mix_surrogate)
    mix_fits.append(mix_run)
  if mix_plans:
    results["mix"] = mix_record
  results["fidelity"] = fidelity
  results["stage0"] = {k: v for k, v in stage0_run.items() if k != "run_dir"}

  train_samples, _ = read_llava_json(os.path.join(config.data.out_dir, "shapes", "train.json"), image_check="exists")
  prior_scores, prior_records = answer_prior_scores(train_samples, samples)
  prior = {"scores": prior_scores, "answers": [r["prediction"] for r in prior_records]}
  print(f"  answer prior without images: accuracy {prior_scores['overall']['accuracy']:.3f}")
  per_seed, answers, routes = {}, {}, {}
  for seed in config.seeds:
    print(f"seed {seed}")
    rows, surrogate_dir, seed_surrogate = {}, translator_dir, surrogate
    if config.steps.pretrain:
      surrogate_dir = train(runs.pretrain_config(config, seed, translator_dir))["run_dir"]
      seed_surrogate = trained_llm(truncation, plan, surrogate_dir)
    tag = lambda name: f"seed{seed}_{name}"
    if "surrogate" in config.conditions:
      route = routes[seed] = surrogate_route(config, seed, surrogate_dir, target, truncation, plan, llm_config,
                                             tokenizer, vit, chat_sequences, tuple(mix))
      d = route["encoder_dir"]
      if route["refits"]:  # the last chunk trained against the refitted translator
        seed_surrogate = surrogate_llm(truncation, plan, route["surrogate_dir"], package_of(d))
      rows["a_surrogate_on_surrogate"] = score(tag("a"), lambda: package_of(d), seed_surrogate, plan.segments)
      rows["b_surrogate_grafted"] = score(tag("b"), lambda: package_of(d), target, None)
      for i, (mix_plan, mix_llm) in enumerate(zip(mix_plans, mix_llms)):
        rows[f"a_on_mix{i + 1}"] = score(tag(f"a_mix{i + 1}"), lambda: package_of(d), mix_llm, mix_plan.segments)
    if "target" in config.conditions:
      d_c = train(runs.encoder_config(config, seed, "target", surrogate_dir))["run_dir"]
      rows["c_target_on_target"] = score(tag("c"), lambda: package_of(d_c), target, None)
      rows["c2_target_on_surrogate"] = score(tag("c2"), lambda: package_of(d_c), seed_surrogate, plan.segments)
    if "truncation" in config.conditions:
      d_d = train(runs.encoder_config(config, seed, "truncation", surrogate_dir))["run_dir"]
      rows["d_truncation_grafted"] = score(tag("d"), lambda: package_of(d_d), target, None)
      rows["d2_truncation_on_truncation"] = score(tag("d2"), lambda: package_of(d_d), truncation, plan.segments)
    if "untrained" in config.conditions:
      fresh = lambda: starting_encoder(VLM(vit, llm_config, None, config.vit.projector_depth), config.vit, seed)
      rows["e_untrained_grafted"] = score(tag("e"), fresh, target, None)
    rows["prior_no_image"] = prior
    per_seed[str(seed)] = {k: v["scores"] for k, v in rows.items()}
    answers[seed] = {k: v["answers"] for k, v in rows.items()}
  results["per_seed"] = per_seed
  if any(r["refits"] for r in routes.values()):
    results["refits"] = {str(seed): r["refits"] for seed, r in routes.items()}
  results["summary"] = report.summarize(per_seed)

  if config.steps.transfer:
    results["transfer"] = transfer(config, target, llm_config, [plan, *mix_plans], scorer, score,
                                   [stage0_run, *mix_fits], routes.get(config.seeds[0]))
  markdown = report.write_outputs(config.out_dir, results)
  first = config.seeds[0]
  show = list(range(min(8, len(samples))))
  report.plot_examples([samples[i].image for i in show], [samples[i].conversation[0]["content"].replace("<image>", "").strip()
                                                           for i in show],
                       {k.split("_")[0]: [answers[first][k][i] for i in show] for k in answers[first]
                        if k[0] in "abce" and not k.startswith(("c2", "a_on_mix"))},
                       [str(samples[i].extra.get("answer", "")) for i in show],
                       os.path.join(config.out_dir, "examples.png"))
  if results.get("transfer"):
    report.plot_transfer(results["transfer"], os.path.join(config.out_dir, "transfer.png"))
  print(markdown)
  return results


def stage0_compute(config, stage0_run: dict, llm_config, plan: SurrogatePlan, seq: int) -> RunCompute:
  """Stage 0's decoder compute: the CE run's steps through the surrogate (6N per token, an upper
  bound), or the fit's (fit_compute)."""
  if config.translator_objective == "ce":
    return run_compute(stage0_run["run_dir"], train_flops_per_token(llm_config, plan.segments, True, seq))
  return fit_compute(stage0_run, llm_config, plan, seq)


def fit_compute(fit: dict, llm_config, plan: SurrogatePlan, seq: int) -> RunCompute:
  """A translator fit's decoder compute: one forward pass of the target over its sequences plus
  its steps through the translator blocks alone (3 x a layer's forward FLOPs per token)."""
  full = decoder_cost(llm_config, seq_len=seq)
  translators = sum(r.num_translators for r in plan.ranges)
  layer_flops = (full.fwd_flops_per_token - 2 * llm_config.vocab_size * llm_config.hidden_size) / full.layers
  flops = fit["teacher_tokens"] * full.fwd_flops_per_token + fit["fit_tokens"] * 3 * layer_flops * translators
  return RunCompute(fit["steps"], fit["teacher_tokens"], flops, fit["seconds"])


def transfer(config, target, llm_config, plans: list[SurrogatePlan], scorer, score, stage0_runs: list[dict],
             route: dict | None) -> dict:
  """(f): stage 3 on the full target from the seed-0 graft and from an adapter-only start, each
  scored every transfer_eval_every steps; compute is cumulative over the route's earlier stages.
  plans, stage0_runs: the surrogate of `ranges` first, then each of a mix's (mix_ranges); the graft
  route counts every stage 0 and each stage-2 step at the cost of the surrogate it ran against."""
  seq = 64  # typical padded length of the offline samples; attention is a small share either way
  frozen_tok = train_flops_per_token(llm_config, None, False, seq)
  surrogate_tok = [train_flops_per_token(llm_config, p.segments, False, seq) for p in plans]
  decoder_tok = train_flops_per_token(llm_config, None, True, seq)
  if route is None:
    raise ValueError("(f) transfer starts from the seed's surrogate-trained encoder: keep condition 'surrogate'")
  graft_dir = route["encoder_dir"]
  graft_route = ZERO
  for p, fit in zip(plans, stage0_runs, strict=True):
    graft_route = graft_route + stage0_compute(config, fit, llm_config, p, seq)
  for stage2_dir in route["stage2_dirs"]:
    graft_route = graft_route + run_compute(stage2_dir, surrogate_tok)
  for refit in route["refits"]:
    graft_route = graft_route + fit_compute(refit, llm_config, plans[0], seq)
  starts = {
      "from_graft": (graft_dir, graft_route),
  }
  adapter_dir = train(runs.adapter_config(config))["run_dir"]
  starts["from_adapter"] = (adapter_dir, run_compute(adapter_dir, frozen_tok))
  curves = {}
  for name, (start_dir, before) in starts.items():
    cfg = runs.transfer_config(config, name, start_dir)
    run_dir = train(cfg)["run_dir"]
    start_llm = target
    points = [(0, before, score(f"f_{name}_0", lambda d=start_dir: package_of(d), start_llm, None))]
    ckpt = RunCheckpointer(os.path.join(run_dir, "checkpoints"), keep_last=1000, save_every=0)
    base = {**starting_encoder(VLM(scorer.vit, llm_config, None, config.vit.projector_depth), cfg.vit, cfg.vit.seed),
            "llm": target}
    for step in ckpt.all_steps():
      trained, meta = ckpt.restore_trainable(step)
      _, frozen = split(base, meta["trainable_spec"])
      params = merge(jax.tree.map(np.asarray, trained), frozen)
      result = score(f"f_{name}_{step}", lambda p=params: {"img": p["img"], "proj": p["proj"]}, params["llm"], None)
      points.append((step, before + run_compute(run_dir, decoder_tok, upto_step=step), result))
    ckpt.close()
    curves[name] = [{"step": s, "accuracy": r["scores"]["overall"]["accuracy"], "flops": c.flops,
                     "seconds": c.seconds, "tokens": c.tokens} for s, c, r in points]
  return {"curves": curves, "saving": equal_score_saving(curves)}


def _compute_to_reach(curve: list[dict], accuracy: float, key: str) -> float | None:
  """Cumulative compute at which `curve` first reaches `accuracy` (linear between points)."""
  for prev, point in zip([None] + curve[:-1], curve):
    if point["accuracy"] >= accuracy:
      if prev is None or point["accuracy"] == prev["accuracy"]:
        return point[key]
      frac = (accuracy - prev["accuracy"]) / (point["accuracy"] - prev["accuracy"])
      return prev[key] + frac * (point[key] - prev[key])
  return None


def equal_score_saving(curves: dict) -> dict:
  """Compute the graft route needs to reach the adapter-only route's final accuracy, vs what the
  adapter-only route needed to reach it first (FLOPs and wall-clock). No saving is stated when the
  adapter-only route did not improve on its start (nothing to reach)."""
  goal = curves["from_adapter"][-1]["accuracy"]
  out: dict[str, Any] = {"goal_accuracy": goal}
  if goal <= curves["from_adapter"][0]["accuracy"]:
    out["statement"] = (f"The adapter-only route did not improve on its start ({goal:.3f}); no equal-score "
                        "saving can be read off.")
    return out
  for key in ("flops", "seconds"):
    graft, base = _compute_to_reach(curves["from_graft"], goal, key), _compute_to_reach(curves["from_adapter"], goal, key)
    out[key] = {"graft": graft, "adapter": base, "saving": None if graft is None or not base else 1 - graft / base}
  s = out["flops"]["saving"]
  out["statement"] = (f"The adapter-only route's final accuracy {goal:.3f} is reached by the graft route with "
                      f"{abs(s):.0%} {'less' if s >= 0 else 'more'} decoder compute (cumulative, all stages)."
                      if s is not None else
                      f"The graft route does not reach the adapter-only route's final accuracy {goal:.3f} "
                      f"within the budget.")
  return out
