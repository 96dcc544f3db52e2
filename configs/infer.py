"""Ask a trained encoder about an image, grafted onto the full target or on its surrogate.

  python -m graft_jax.main --config=configs/infer.py --config.image=PATH --config.question="..."
      [--config.decoder=surrogate]

`package`: the encoder package stage 2 wrote (default: the main job's seed-0 encoder);
`surrogate_from`: the run whose translator the surrogate uses (stage 0, or stage 1 where the route
ran one; evaluating on the surrogate loads it, then stage 2's encoder side).
"""
import ml_collections

from graft_jax.config_lib import default_template, model_config


def get_config(arg=None):
  name = arg or "smollm2-135m"
  return ml_collections.ConfigDict({
      "task": "infer",
      "model": model_config(name),
      "template": default_template(name),
      "package": "runs/surrogate/seed0/encoder_surrogate/encoder_package",
      "decoder": "target",
      "surrogate_from": "runs/surrogate/translator",
      "image": "",
      "question": "What color is the shape?",
      "max_new_tokens": 32,
  })
