"""Load a config file from configs/ the way `--config=configs/<name>.py` does (without absl)."""
import importlib.util
import os

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name_or_path: str, arg=None):
  path = name_or_path if name_or_path.endswith(".py") else os.path.join(CONFIG_DIR, f"{name_or_path}.py")
  spec = importlib.util.spec_from_file_location(f"config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
