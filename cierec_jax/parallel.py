"""Running the train step on many devices: jit over a mesh (default) or pmap.

jit: a 1-D ('data',) mesh over all devices (AxisType.Auto: explicit meshes
break linen's Embed), batch sharded on 'data', state replicated and donated.
Multi-host: each process passes only its shard of the batch and
`make_array_from_process_local_data` assembles the global array.
pmap: the same step with axis_name='data' and pmean, state replicated per device.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch(global_batch_size: int, num_devices: int):
  if global_batch_size % num_devices:
    raise ValueError(f'train.batch_size={global_batch_size} must be divisible by the '
                     f'{num_devices} devices')


def eval_placement(batch_size: int):
  """Shards evaluation's per-user batches over all devices when they divide it
  (the parameters are then replicated by jit); None keeps one device."""
  if batch_size % jax.device_count():
    return None
  sharded = NamedSharding(make_mesh(), P(AXIS))
  return lambda batch: jax.device_put(batch, sharded)


class JitRunner:
  """jax.jit over a mesh; the state lives replicated on all devices."""

  def __init__(self, step_fn, mesh: Mesh):
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P(AXIS))
    self._step = jax.jit(step_fn, in_shardings=(self.replicated, self.sharded, self.replicated),
                         out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def put_state(self, state):
    return jax.device_put(state, self.replicated)

  def get_state(self, state):
    """The state as single-copy arrays (for checkpoints and evaluation)."""
    return state

  def put_batch(self, local_batch: dict):
    return {k: jax.make_array_from_process_local_data(self.sharded, v) for k, v in local_batch.items()}

  def step(self, state, batch, rng):
    return self._step(state, batch, rng)


class PmapRunner:
  """jax.pmap with pmean; the state carries a leading device axis."""

  def __init__(self, step_fn, devices=None):
    self.devices = list(devices if devices is not None else jax.local_devices())
    self._step = jax.pmap(step_fn, axis_name=AXIS, in_axes=(0, 0, None), devices=self.devices,
                          donate_argnums=(0,))

  def put_state(self, state):
    n = len(self.devices)
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)

  def get_state(self, state):
    return jax.tree.map(lambda x: x[0], state)

  def put_batch(self, local_batch: dict):
    n = len(self.devices)
    return {k: v.reshape((n, v.shape[0] // n) + v.shape[1:]) for k, v in local_batch.items()}

  def step(self, state, batch, rng):
    state, metrics = self._step(state, batch, rng)
    return state, jax.tree.map(lambda x: x[0], metrics)
