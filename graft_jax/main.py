"""Entry point: `python -m graft_jax.main --config=configs/<job>.py[:arg] [--config.key=value ...]`.

Dispatches on `config.task` to `graft_jax.tasks.<task>.run(config)`. Configs are locked, so an
override of a key that doesn't exist is an error before anything runs.
"""
from __future__ import annotations

import importlib

from absl import app
from absl import logging
from ml_collections import config_flags

TASKS = ("convert", "generate", "trajectory", "surrogate_report", "surrogate")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config file.", lock_config=True)


def run_task(config) -> object:
  if config.task not in TASKS:
    raise ValueError(f"Unknown task {config.task!r}; known tasks: {TASKS}")
  module = importlib.import_module(f"graft_jax.tasks.{config.task}")
  return module.run(config)


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/<job>.py is required")
  logging.info("Config:\n%s", _CONFIG.value)
  run_task(_CONFIG.value)


if __name__ == "__main__":
  app.run(main)
