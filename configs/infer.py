"""Ask a trained encoder about an image, grafted onto the full target or on its surrogate.

  python -m graft_jax.main --config=configs/infer.py --config.image=PATH --config.question="..."
      [--config.decoder=surrogate]

`package`: the encoder package stage 2 wrote; `surrogate_from`: the stage-1 run whose translator
the surrogate uses (evaluating on the surrogate loads stage 1, then stage 2).
"""
import ml_collections

from graft_jax.config_lib import default_template, model_config


def get_config(arg=None):
  name = arg or "smollm2-135m"
  return ml_collections.ConfigDict({
      "task": "infer",
      "model": model_config(name),
      "template": default_template(name),
      "package": "runs/surrogate/finetune_encoder/encoder_package",
      "decoder": "target",
      "surrogate_from": "runs/surrogate/pretrain",
      "image": "",
      "question": "What color is the shape?",
      "max_new_tokens": 32,
  })
