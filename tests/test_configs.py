"""Every config file loads, names a known task, and refuses unknown keys once locked."""
import glob
import os

import pytest

from graft_jax.main import TASKS
from tests.config_files import load_config

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_names_a_task(path):
  config = load_config(path)
  assert config.task in TASKS
  config.lock()
  with pytest.raises(AttributeError):
    config.no_such_key = 1


def test_unknown_preset_is_refused():
  from graft_jax.config_lib import model_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="Unknown model preset 'llama-9b'"):
    model_config("llama-9b")


def test_llama_preset_without_a_source_is_refused():
  from graft_jax.config_lib import model_config  # pylint: disable=g-import-not-at-top
  from graft_jax.tasks.model_loading import load_from_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="needs --config.model.source"):
    load_from_config(model_config("llama-3.1-8b"))
