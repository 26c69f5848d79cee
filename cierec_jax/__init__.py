"""cierec-jax: CIERec and its baselines in JAX/Flax."""
