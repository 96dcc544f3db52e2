"""The end-to-end reproduction of zero-shot grafting (the main job; experiments/graft_smollm2.py)."""
