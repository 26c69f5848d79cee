"""Checkpoints hold host copies of the state: replicated arrays in, numpy out, bit for bit."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from cierec_jax import checkpoint
from cierec_jax import parallel


def test_a_replicated_state_round_trips_as_host_arrays(tmp_path):
  mesh = parallel.make_mesh()  # the 4 forced CPU devices
  replicated = lambda x: jax.device_put(x, NamedSharding(mesh, P()))
  rng = np.random.default_rng(0)
  state = {'params': {'w': replicated(rng.normal(size=(3, 5)).astype(np.float32))},
           'count': replicated(np.int32(7)), 'host': rng.normal(size=4).astype(np.float32)}
  ck = checkpoint.Checkpointer(str(tmp_path))
  ck.save(3, state, {'epoch': 1})
  restored, meta = ck.restore(3, state)
  ck.close()
  assert meta == {'epoch': 1}
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype
    np.testing.assert_array_equal(got, np.asarray(want))


def test_a_sharded_leaf_is_refused_not_saved_in_part():
  sharded = jax.device_put(jnp.zeros((4, 2)), NamedSharding(parallel.make_mesh(), P(parallel.AXIS)))
  with pytest.raises(ValueError, match='sharded .* expected replicated'):
    checkpoint.host_copy({'w': sharded})
