"""Checkpoint converters: HF safetensors and GGUF into graft_jax params trees."""
