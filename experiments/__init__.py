"""The experiment and benchmark programs (python -m experiments.X)."""

from cierec_jax import host_memory as _host_memory

# As `python -m cierec_jax.X` does: restart once with huge pages, before JAX loads.
_host_memory.restart_if_starting_as_module()
