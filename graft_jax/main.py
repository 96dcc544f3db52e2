"""Entry point: `python -m graft_jax.main --config=configs/<job>.py[:arg] [--config.key=value ...]`.

Dispatches on `config.task` to `graft_jax.tasks.<task>.run(config)`. Configs are locked, so an
override of a key that doesn't exist is an error before anything runs.
"""
from __future__ import annotations

import importlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

TASKS = ("convert", "generate", "trajectory", "surrogate_report", "surrogate", "data", "train", "infer", "evaluate",
         "cost", "paper_data")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config file.", lock_config=True)


def run_task(config) -> object:
  if config.task not in TASKS:
    raise ValueError(f"Unknown task {config.task!r}; known tasks: {TASKS}")
  if config.get("distributed", False):
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()  # multi-host: TPU pod slices and GPU clusters detect their peers
  module = importlib.import_module(f"graft_jax.tasks.{config.task}")
  return module.run(config)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a clear message for an override of a key the config lacks."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # what config_flags raises for an unknown field
    key = str(e).strip("'\"")
    bad = [a for a in argv if a.startswith("--config.") and key in a.split("=")[0].split(".")]
    sys.exit(f"error: unknown config key {key!r} in {bad or argv[1:]}; "
             "overrides must name fields the config file defines")
  except flags.Error as e:
    sys.exit(f"error: {e}")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every file operation at INFO
    logging.set_verbosity(logging.WARNING)
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/<job>.py is required")
  logging.info("Config:\n%s", _CONFIG.value)
  run_task(_CONFIG.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
