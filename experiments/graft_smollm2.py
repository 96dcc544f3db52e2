"""The reproduction at full size: `python -m graft_jax.main --config=configs/surrogate.py:full`.

  python experiments/graft_smollm2.py [--config.ranges="((26, 28),)"] [--config.run_dir=...]

Seeds 0, 1, 2 for conditions (a)-(e) and transfer (f) from seed 0; writes
experiments/results/reproduction/{results.json,results.md,transfer.png,examples.png}. Any
--config.key=value override of configs/surrogate.py applies; the run resumes where it stopped.
"""
import os
import sys

from absl import app

from graft_jax import main as graft_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
  argv = sys.argv[:1] + [f"--config={os.path.join(REPO, 'configs', 'surrogate.py')}:full"] + sys.argv[1:]
  app.run(graft_main.main, argv=argv, flags_parser=graft_main.parse_flags)
