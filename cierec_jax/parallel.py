"""Running train calls on many devices and processes: jit over a mesh (default) or pmap.

A call (`train_step.scan_steps`) is call(state, batches, items, key,
first_step, hparams): batches are stacked [n, B, ...] (n steps per call),
items the item tables gathered inside the step (or None), hparams the
optimiser's scalars (optim.hyperparameters), replicated like the key.
jit: a 1-D ('data',) mesh over all devices (AxisType.Auto: explicit meshes
break linen's Embed), batches sharded on 'data' (their axis 1), state and
items replicated, state donated. Multi-host: each process passes only its
shard of the batches and `make_array_from_process_local_data` assembles the
global array.
pmap: the same step with axis_name='data' and psum, state and items
replicated per device.

Processes: `initialize` joins a multi-process run; process 0 writes
(`is_writer`); `process_rows` / `gather_rows` split work such as evaluation
across processes.

`ShardedSum` makes a step's result independent of the device count: the
batch is cut into a fixed number of logical shards, each shard's gradient is
computed by the same program whatever device holds it, and the shards' sums
are added in one fixed pairwise order (README, "Same results on 1, 2 or 4
devices").
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cierec_jax import xla_options

AXIS = 'data'

# config.train field -> (the environment variable read when it is unset, its unset value).
PROCESS_SETTINGS = {'coordinator_address': ('JAX_COORDINATOR_ADDRESS', ''),
                    'num_processes': ('JAX_NUM_PROCESSES', 0),
                    'process_id': ('JAX_PROCESS_ID', -1)}


def process_settings(train) -> dict:
  """config.train's coordinator_address / num_processes / process_id, each
  falling back to its JAX_* environment variable; None where neither is set."""
  out = {}
  for field, (var, unset) in PROCESS_SETTINGS.items():
    value = train.get(field, unset)
    if value == unset:
      value = os.environ.get(var) or None
    if value is not None and field != 'coordinator_address':
      try:
        value = int(value)
      except ValueError:
        raise ValueError(f'train.{field} (or ${var}) = {value!r}: expected an integer') from None
    out[field] = value
  return out


def initialize(train):
  """Joins a multi-process run when train.distributed; must run before any
  device is touched. Explicit settings go to `jax.distributed.initialize`;
  unset ones are detected by JAX on TPU pods, Slurm, Open MPI and k8s."""
  if not train.distributed or jax.distributed.is_initialized():
    return
  settings = process_settings(train)
  try:
    jax.distributed.initialize(**settings)
  except ValueError as e:
    missing = [f'train.{f} (${v})' for f, (v, _) in PROCESS_SETTINGS.items() if settings[f] is None]
    raise ValueError(
        f'train.distributed=True but {", ".join(missing) or "the process settings"} could not be '
        f'determined ({e}). Outside a TPU pod, Slurm, Open MPI or Kubernetes, set all three, e.g. '
        '--config.train.coordinator_address=localhost:12345 --config.train.num_processes=2 '
        '--config.train.process_id=0 (README, "Multi-host runs").') from e


def is_writer() -> bool:
  """Process 0 writes a run's files and prints its progress; the others only compute."""
  return jax.process_index() == 0


def barrier(name: str):
  """Waits until every process reaches this point (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def failed_processes(failed: bool) -> list[int]:
  """Every process says whether it failed; returns the ids of those that did,
  the same list on every process, so that all stop together rather than wait
  in a collective for one that has stopped."""
  if jax.process_count() == 1:
    return [0] if failed else []
  flags = np.asarray(multihost_utils.process_allgather(np.array([failed])))
  return [p for p, f in enumerate(flags.reshape(-1)) if f]


def process_rows(n: int) -> np.ndarray:
  """This process's contiguous share of n rows of work split across processes:
  [ceil(n / P)] indices, the last process's share wrapping to row 0 (extra rows
  are dropped by `gather_rows`)."""
  m = -(-n // jax.process_count())
  return np.arange(jax.process_index() * m, (jax.process_index() + 1) * m) % max(n, 1)


def gather_rows(x: np.ndarray, n: int) -> np.ndarray:
  """Every process's `process_rows(n)` results [m, ...] in process order: [n, ...]."""
  if jax.process_count() > 1:
    x = np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return x[:n]


def local_replica(tree):
  """A tree of replicated arrays (possibly spanning processes) as arrays
  replicated over this process's devices, for work each process does alone."""
  sharding = NamedSharding(make_mesh(jax.local_devices()), P())

  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return jax.device_put(x, sharding)

  return jax.tree.map(local, tree)


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch(global_batch_size: int, num_devices: int):
  if global_batch_size % num_devices:
    raise ValueError(f'train.batch_size={global_batch_size} must be divisible by the '
                     f'{num_devices} devices')


def eval_placement(batch_size: int):
  """Shards evaluation's per-user batches over this process's devices when
  they divide it (the parameters are then replicated by jit); None keeps one device."""
  if batch_size % jax.local_device_count():
    return None
  sharded = NamedSharding(make_mesh(jax.local_devices()), P(AXIS))
  return lambda batch: jax.device_put(batch, sharded)


def _power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


class ShardedSum:
  """fn applied to each of `shards` fixed slices of a batch, results summed in
  one fixed order, whatever the number of devices.

  The batch's rows are cut into `shards` contiguous logical shards; device d of
  n holds shards [d * k, (d + 1) * k), k = shards / n, and runs fn on them one
  after the other (the same compiled loop body on every device count; see
  `_map_in_loop`). The per-shard results are then added as a pairwise tree,
  ((s0 + s1) + (s2 + s3)) + ..., whose lower levels are local and whose upper
  levels pair devices d and d ^ 2^l (`ppermute`); floating-point addition is
  commutative, so both partners hold the same bits and the sum equals the
  one-device sum exactly.
  """

  def __init__(self, mesh: Mesh, shards: int, batch_size: int):
    n = mesh.devices.size
    if not _power_of_two(shards) or shards % n or batch_size % shards:
      raise ValueError(
          f'train.batch_shards={shards}: expected a power of two that is a multiple of the {n} '
          f'devices and divides train.batch_size={batch_size} (or 0 to turn fixed shards off)')
    if not _power_of_two(n):
      raise ValueError(f'train.batch_shards needs a power-of-two number of devices, not {n}; '
                       'set train.batch_shards=0')
    self.mesh, self.shards, self.devices = mesh, shards, n

  def __call__(self, fn, batch: dict, key, *operands):
    """fn(shard, shard_key, *operands) -> pytree of float arrays; returns the
    fixed-order sum over shards. batch: [B, ...] arrays sharded on 'data';
    shard_key: key folded with the shard's index; operands: replicated."""
    local_shards = self.shards // self.devices
    split = {k: v.reshape((self.shards, -1) + v.shape[1:]) for k, v in batch.items()}

    def per_device(local, key, *operands):
      first = jax.lax.axis_index(AXIS) * local_shards
      keys = jax.vmap(lambda i: jax.random.fold_in(key, first + i))(np.arange(local_shards))
      parts = _map_in_loop(lambda a, *ops: fn(a[0], a[1], *ops), (local, keys), local_shards,
                           operands)
      total = jax.tree.map(_pairwise_sum, parts)
      for level in range(self.devices.bit_length() - 1):
        perm = [(d, d ^ (1 << level)) for d in range(self.devices)]
        total = jax.tree.map(lambda x, p=perm: x + jax.lax.ppermute(x, AXIS, p), total)
      return total

    return jax.shard_map(per_device, mesh=self.mesh,
                         in_specs=(P(AXIS), P()) + (P(),) * len(operands), out_specs=P(),
                         check_vma=False)(split, key, *operands)


def _map_in_loop(fn, xs, length: int, operands=()):
  """[fn(x, *operands) for x in xs] stacked, like lax.map, but as a loop whose
  body XLA compiles the same way in every program: its trip count is hidden
  (XLA inlines a loop of one iteration), and fn's inputs and outputs pass
  barriers tied to the loop index, so no part of fn is hoisted out of the loop
  or fused with the stacking, whose shapes depend on the device count.
  Unrolled copies instead of a loop compile differently in the one-device
  program than in multi-device ones."""
  first = jax.tree.map(lambda x: x[0], xs)
  shapes = jax.eval_shape(fn, first, *operands)
  out = jax.tree.map(lambda s: jnp.zeros((length,) + s.shape, s.dtype), shapes)

  def body(i, out):
    barrier = jax.lax.optimization_barrier
    x = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), xs)
    i, x, ops = barrier((i, x, operands))
    y = barrier(fn(x, *ops))
    return jax.tree.map(lambda o, v: jax.lax.dynamic_update_index_in_dim(o, v, i, 0), out, y)

  return jax.lax.fori_loop(0, jax.lax.optimization_barrier(jnp.int32(length)), body, out)


def _pairwise_sum(x):
  """[k, ...] -> [...]: ((x0 + x1) + (x2 + x3)) + ..., k a power of two."""
  while x.shape[0] > 1:
    x = x[0::2] + x[1::2]
  return x[0]


class JitRunner:
  """jax.jit over a mesh; the state lives replicated on all devices."""

  def __init__(self, call_fn, mesh: Mesh):
    self.mesh = mesh
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P(None, AXIS))
    r = self.replicated
    self._step = xla_options.jit(call_fn, in_shardings=(r, self.sharded, r, r, r, r),
                                 out_shardings=(r, r), donate_argnums=(0,))

  def put_state(self, state):
    """Replicates a host or single-device state (the same on every process) over the mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), state)

  def put_items(self, tables: dict):
    return jax.device_put(tables, self.replicated)

  def get_state(self, state):
    """The state as single-copy arrays (for checkpoints and evaluation)."""
    return state

  def put_batch(self, local_batches: dict):
    """{name: [n, local B, ...]} -> global arrays sharded on the batch axis."""
    if jax.process_count() == 1:  # one transfer for all the arrays: 2.5x faster for MF's call
      return jax.device_put(local_batches, self.sharded)
    return {k: jax.make_array_from_process_local_data(self.sharded, v)
            for k, v in local_batches.items()}

  def step(self, state, batches, items, key, first_step: int, hparams: dict):
    """n steps; returns (state, metrics of [n] arrays)."""
    return self._step(state, batches, items, key, np.int32(first_step), hparams)

  def compiled(self, state, batches, items, key, first_step: int, hparams: dict):
    """The program `step` runs on these arguments (its text, its cost analysis)."""
    return self._step.lower(state, batches, items, key, np.int32(first_step), hparams).compile()


class PmapRunner:
  """jax.pmap with psum; the state carries a leading device axis.

  devices: None maps over this process's devices, with collectives across
  all processes (multi-host pmap); a list pins them (tests)."""

  def __init__(self, call_fn, devices=None):
    self.devices = devices
    self.count = len(devices) if devices is not None else jax.local_device_count()
    self._step = jax.pmap(call_fn, axis_name=AXIS, in_axes=(0, 0, 0, None, None, None),
                          devices=devices, donate_argnums=(0,))
    # pmap takes no compiler options: with one process they go in ahead of time.
    # With several, pmap's call converts each process's arrays to global ones
    # and back, which its ahead-of-time program does not, so XLA's defaults stay.
    self._options = xla_options.compiler_options()
    self._ahead_of_time = bool(self._options) and jax.process_count() == 1
    self._executables = xla_options.AheadOfTime(self._options)

  def put_state(self, state):
    n = self.count
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)

  def get_state(self, state):
    return jax.tree.map(lambda x: x[0], state)

  def put_items(self, tables: dict):
    """One copy per device, placed once (an identity pmap) rather than per call."""
    return jax.pmap(lambda x: x, devices=self.devices)(self.put_state(tables))

  def put_batch(self, local_batches: dict):
    """{name: [n, B, ...]} -> [devices, n, B / devices, ...]."""
    d = self.count
    return {k: np.swapaxes(v.reshape((v.shape[0], d, v.shape[1] // d) + v.shape[2:]), 0, 1)
            for k, v in local_batches.items()}

  def step(self, state, batches, items, key, first_step: int, hparams: dict):
    """n steps; returns (state, metrics of [n] arrays)."""
    args = (state, batches, items, key, np.int32(first_step), hparams)
    run = self._executable(args) if self._ahead_of_time else self._step
    state, metrics = run(*args)
    return state, jax.tree.map(lambda x: x[0], metrics)

  def compiled(self, state, batches, items, key, first_step: int, hparams: dict):
    """The program `step` runs on these arguments with one process (its text,
    its cost analysis)."""
    return self._executable((state, batches, items, key, np.int32(first_step), hparams))

  def _executable(self, args):
    return self._executables(self._step, args)
