"""cierec-jax: CIERec and its baselines in JAX/Flax."""

from cierec_jax import host_memory as _host_memory

# `python -m cierec_jax.X` restarts once, before JAX loads, with XLA's scratch
# memory on huge pages (host_memory.py); importing the package does nothing.
_host_memory.restart_if_starting_as_module()
