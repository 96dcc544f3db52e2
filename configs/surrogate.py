"""The main job (`make run`): the surrogate route on the embedded default (SmolLM2-135M-Instruct),
translator -> stage 1 -> stage 2, with the surrogate's fidelity measured before and after the
translator is trained. Rerunning resumes; a finished stage is skipped.

  python -m graft_jax.main --config=configs/surrogate.py [--config.ranges="((24, 28),)"]

`ranges`: ((start, end) or (start, end, num_translators), ...); the default [19, 28] is what
configs/trajectory.py suggests for SmolLM2. `steps`: per stage; 0 skips a stage.
"""
import ml_collections

from graft_jax.config_lib import data_config, default_template, model_config, vit_config


def get_config(arg=None):
  name = arg or "smollm2-135m"
  return ml_collections.ConfigDict({
      "task": "surrogate",
      "model": model_config(name),
      "template": default_template(name),
      "ranges": ((19, 28),),
      "vit": vit_config(),
      "data": data_config(),
      "run_dir": "runs/surrogate",
      "steps": {"translator": 150, "pretrain": 60, "finetune_encoder": 100},
      "batch_size": 16,
      "num_eval_chats": 64,
      "eval_batch_size": 16,
      "seed": 0,
      "distributed": False,
      "prompts": ("What is the capital of France?", "What is 12 plus 30?",
                  "Name a shape with three corners."),
      "max_new_tokens": 24,
  })
