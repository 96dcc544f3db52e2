"""Learning curve of stage 2 directly on the full target, condition (c) of the reproduction:

  python experiments/stage2_curve.py --steps=240 --every=60 --run_dir=runs/curve_c [--limit=100] \
      [--config.encoder_lr_mult=0.1 ...]

Trains seed 0's (c) encoder with the main job's settings (configs/surrogate.py:full; any
--config.key=value override applies) for --steps steps, checkpointing every --every, then scores
every checkpoint grafted onto the target on the first --limit test questions, per question type,
and writes run_dir/curve.json. The answer prior (blind floor) of those questions is printed too.
"""
from __future__ import annotations

import json
import os

from absl import app, flags
import jax
import numpy as np

from graft_jax import main as graft_main
from graft_jax.data.readers import read_llava_json
from graft_jax.reproduction import runs
from graft_jax.reproduction.answer_prior import answer_prior_scores
from graft_jax.reproduction.scoring import Scorer
from graft_jax.tasks.generate import end_token_ids
from graft_jax.tasks.model_loading import load_from_config
from graft_jax.tasks.surrogate import prepare_encoder
from graft_jax.train.checkpoint import RunCheckpointer
from graft_jax.train.data_setup import ensure_default_datasets
from graft_jax.train.loop import train
from graft_jax.train.model_setup import vit_from_config

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 240, "stage-2 steps")
flags.DEFINE_integer("every", 60, "checkpoint and score every this many steps")
flags.DEFINE_integer("limit", 100, "test questions scored (0: all)")
flags.DEFINE_string("run_dir", "runs/curve_c", "where the run and curve.json go")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(_):
  job = FLAGS.config
  job.run_dir = FLAGS.run_dir
  ensure_default_datasets(job.data)
  prepare_encoder(job)
  cfg = runs.encoder_config(job, job.seeds[0], "target", "", steps=FLAGS.steps)
  cfg.checkpoint.update({"save_every": FLAGS.every, "keep_last": 1000})
  run_dir = train(cfg)["run_dir"]
  target, llm_config, tokenizer = load_from_config(job.model)
  samples, _ = read_llava_json(os.path.join(job.data.out_dir, "shapes", "test.json"), image_check="exists")
  samples = samples[:FLAGS.limit] if FLAGS.limit else samples
  train_samples, _ = read_llava_json(os.path.join(job.data.out_dir, "shapes", "train.json"), image_check="exists")
  prior, _ = answer_prior_scores(train_samples, samples)
  scorer = Scorer(samples, tokenizer, job.template, llm_config, vit_from_config(job.vit), job.vit.projector_depth,
                  end_token_ids(tokenizer, llm_config), job.eval.batch_size, job.eval.max_new_tokens)
  by_type = lambda s: {k: round(v["accuracy"], 3) for k, v in s["by_question_type"].items()}
  curve = {"prior": {"accuracy": prior["overall"]["accuracy"], "by_type": by_type(prior)}, "points": []}
  print(f"answer prior (no image): {prior['overall']['accuracy']:.3f} {by_type(prior)}")
  ckpt = RunCheckpointer(os.path.join(run_dir, "checkpoints"), keep_last=1000, save_every=0)
  for step in ckpt.all_steps():
    trained, _ = ckpt.restore_trainable(step)
    encoder = jax.tree.map(np.asarray, {"img": trained["img"], "proj": trained["proj"]})
    scores, records = scorer(encoder, target, None)
    point = {"step": step, "accuracy": scores["overall"]["accuracy"], "by_type": by_type(scores),
             "answers": [r["prediction"] for r in records[:10]]}
    curve["points"].append(point)
    print(f"step {step}: accuracy {point['accuracy']:.3f} {point['by_type']}")
  ckpt.close()
  with open(os.path.join(FLAGS.run_dir, "curve.json"), "w") as f:
    json.dump(curve, f, indent=1)


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  argv = sys.argv[:1] + [f"--config={os.path.join(REPO, 'configs', 'surrogate.py')}:full"] + sys.argv[1:]
  app.run(main, argv=argv, flags_parser=graft_main.parse_flags)
