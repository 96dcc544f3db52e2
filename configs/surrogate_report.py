"""Target vs surrogate size and FLOPs for the presets: python -m graft_jax.main --config=configs/surrogate_report.py

Ranges are the reference's released ones for Llama-3.x; SmolLM2's is the one configs/trajectory.py
suggests. Each plan is (preset, ranges); override with e.g.
--config.plans='(("smollm2-135m", ((24, 28),)),)'.
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict({
      "task": "surrogate_report",
      "seq_len": 4096,
      "plans": (
          ("smollm2-135m", ((19, 28),)),
          ("llama-3.2-3b", ((16, 26),)),
          ("llama-3.1-8b", ((17, 30),)),
          ("llama-3.1-70b", ((40, 78),)),
      ),
  })
