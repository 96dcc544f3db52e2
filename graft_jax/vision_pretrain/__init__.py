"""Offline stand-in for a pretrained CLIP: a small ViT pretrained on synthetic scenes (see train.py)."""
