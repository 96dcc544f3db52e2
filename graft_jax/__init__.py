"""graft_jax: zero-shot vision encoder grafting via LLM surrogates, in JAX/Flax."""
