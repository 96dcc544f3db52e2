"""Does a trained encoder's decoder use the image? Answer-word cross-entropy on training batches
with each sample's own image vs with the images rolled by one across the batch:

  python experiments/image_ablation.py --package=runs/curve_c/seed0/encoder_target/encoder_package

Runs the full target (or --surrogate_from=RUN_DIR for a surrogate's translator run, with the main
job's --config.ranges) on --batches batches of the main job's stage-2 data (configs/surrogate.py:full,
overrides apply). Answer words are the supervised tokens that are not chat markup, "\\n" or ".". Equal
numbers mean the image carries nothing the decoder uses.
"""
from __future__ import annotations

import os

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from graft_jax import main as graft_main
from graft_jax.reproduction import runs
from graft_jax.tasks.surrogate import package_of, prepare_encoder
from graft_jax.train.batch import expand_batch
from graft_jax.train.data_setup import make_train_iterator
from graft_jax.train.model_setup import build_stage_model
from graft_jax.train.stages import get_stage
from graft_jax.train.step import logits_fn

FLAGS = flags.FLAGS
flags.DEFINE_string("package", None, "the encoder_package directory of a stage-2 run", required=True)
flags.DEFINE_string("surrogate_from", "", "a translator run dir: evaluate on that surrogate instead")
flags.DEFINE_integer("batches", 4, "batches of the training data (data seed 123)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKUP = {"<|im_end|>", "<|im_start|>", "", ".", "user", "assistant"}


def main(_):
  job = FLAGS.config
  prepare_encoder(job)
  condition = "surrogate" if FLAGS.surrogate_from else "target"
  cfg = runs.encoder_config(job, 0, condition, FLAGS.surrogate_from)
  cfg.train.seed = 123
  stage = get_stage("finetune_encoder")
  built = build_stage_model(cfg, stage)
  params = {**built.params, **package_of(os.path.dirname(os.path.abspath(FLAGS.package)))}
  batches, _ = make_train_iterator(cfg, stage, built.tokenizer, built.model.image_len)
  logits = jax.jit(logits_fn(built.model, False))
  losses = {"own image": [], "another sample's image": []}
  for _ in range(FLAGS.batches):
    batch = {k: jnp.asarray(v) for k, v in next(batches).items()}
    for name, images in zip(losses, (batch["images"], jnp.roll(batch["images"], 1, axis=0))):
      b = expand_batch({**batch, "images": images}, built.model.image_len, 0)
      logp = jax.nn.log_softmax(logits(params, b)[:, :-1].astype(jnp.float32), -1)
      targets = b["tokens"][:, 1:]
      ce = np.asarray(-jnp.take_along_axis(logp, targets[..., None], -1)[..., 0])
      mask = np.asarray(b["loss_mask"][:, 1:] & b["valid"][:, 1:])
      targets = np.asarray(targets)
      for row, col in zip(*np.where(mask)):
        if built.tokenizer.decode([int(targets[row, col])]).strip() not in MARKUP:
          losses[name].append(ce[row, col])
  for name, values in losses.items():
    print(f"answer-word cross-entropy, {name}: {np.mean(values):.3f} nats ({len(values)} tokens)")


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  argv = sys.argv[:1] + [f"--config={os.path.join(REPO, 'configs', 'surrogate.py')}:full"] + sys.argv[1:]
  app.run(main, argv=argv, flags_parser=graft_main.parse_flags)
