"""Running train calls on many devices: jit over a mesh (default) or pmap.

A call (`train_step.scan_steps`) is call(state, batches, items, key,
first_step): batches are stacked [n, B, ...] (n steps per call), items the
item tables gathered inside the step (or None).
jit: a 1-D ('data',) mesh over all devices (AxisType.Auto: explicit meshes
break linen's Embed), batches sharded on 'data' (their axis 1), state and
items replicated, state donated. Multi-host: each process passes only its
shard of the batches and `make_array_from_process_local_data` assembles the
global array.
pmap: the same step with axis_name='data' and pmean, state and items
replicated per device.
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

  def __init__(self, call_fn, mesh: Mesh):
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P(None, AXIS))
    r = self.replicated
    self._step = jax.jit(call_fn, in_shardings=(r, self.sharded, r, r, r), out_shardings=(r, r),
                         donate_argnums=(0,))

  def put_state(self, state):
    return jax.device_put(state, self.replicated)

  def put_items(self, tables: dict):
    return jax.device_put(tables, self.replicated)

  def get_state(self, state):
    """The state as single-copy arrays (for checkpoints and evaluation)."""
    return state

  def put_batch(self, local_batches: dict):
    """{name: [n, local B, ...]} -> global arrays sharded on the batch axis."""
    return {k: jax.make_array_from_process_local_data(self.sharded, v)
            for k, v in local_batches.items()}

  def step(self, state, batches, items, key, first_step: int):
    """n steps; returns (state, metrics of [n] arrays)."""
    return self._step(state, batches, items, key, np.int32(first_step))


class PmapRunner:
  """jax.pmap with pmean; the state carries a leading device axis."""

  def __init__(self, call_fn, devices=None):
    self.devices = list(devices if devices is not None else jax.local_devices())
    self._step = jax.pmap(call_fn, axis_name=AXIS, in_axes=(0, 0, 0, None, None),
                          devices=self.devices, donate_argnums=(0,))

  def put_state(self, state):
    n = len(self.devices)
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)

  def get_state(self, state):
    return jax.tree.map(lambda x: x[0], state)

  def put_items(self, tables: dict):
    """One copy per device, placed once (an identity pmap) rather than per call."""
    return jax.pmap(lambda x: x, devices=self.devices)(self.put_state(tables))

  def put_batch(self, local_batches: dict):
    """{name: [n, B, ...]} -> [devices, n, B / devices, ...]."""
    d = len(self.devices)
    return {k: np.swapaxes(v.reshape((v.shape[0], d, v.shape[1] // d) + v.shape[2:]), 0, 1)
            for k, v in local_batches.items()}

  def step(self, state, batches, items, key, first_step: int):
    """n steps; returns (state, metrics of [n] arrays)."""
    state, metrics = self._step(state, batches, items, key, np.int32(first_step))
    return state, jax.tree.map(lambda x: x[0], metrics)
