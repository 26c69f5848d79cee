"""Same config and seed, same results on 1, 2 and 4 devices (train.batch_shards)."""

import functools
import os

import jax
import numpy as np
import pytest

from cierec_jax import evaluate as eval_lib
from cierec_jax import optim
from cierec_jax import parallel
from cierec_jax import train
from cierec_jax import train_step
from cierec_jax.data import sampler as sampler_lib
from tests import tiny

pytestmark = pytest.mark.slow


def _one_epoch(c, data, devices):
  """One epoch of the jitted step on a mesh of `devices`; returns the final state."""
  model = train.build_model(c, data)
  sampler = sampler_lib.sampler_for(data, c.train.batch_size, c.train.seed)
  optimizer = functools.partial(optim.create, c.train, sampler.steps_per_epoch)
  hparams = optim.hyperparameters(c.train)
  example = sampler_lib.with_item_inputs(next(sampler.batches(0)), data)
  state = train_step.create_state(model, optimizer(), example, c.train.seed)
  mesh = parallel.make_mesh(devices)
  shard_sum = parallel.ShardedSum(mesh, c.train.batch_shards, c.train.batch_size)
  # As train.py's host path: items sent raw (uint8), sharded, normalised in the step.
  call = train_step.scan_steps(train_step.make_train_step(model, optimizer, c.train.l2, None, shard_sum),
                               functools.partial(sampler_lib.device_item_inputs, modality=data.modality))
  runner = parallel.JitRunner(call, mesh)
  dstate = runner.put_state(jax.tree.map(np.array, state))  # a copy: the state is donated
  key = jax.random.key(c.train.seed)
  # As many steps per call as train.py takes (train.steps_per_call=0): one call for
  # MF, one step per call for the image models (a scanned ResNet runs ~13x slower).
  per_call = train_step.steps_per_call(0, model.spec, sampler.steps_per_epoch)
  for first, batches in sampler.calls(0, steps_per_call=per_call):
    batches = sampler_lib.with_item_inputs(batches, data, raw=True)
    dstate, _ = runner.step(dstate, runner.put_batch(batches), None, key, first, hparams)
  return model, jax.device_get(dstate)


# CIERec holds MF(Image)'s encoder, BatchNorm and image path (mf_image: 96 s of the suite).
# Its 1 and 4 devices hold the two cases of a shard's BatchNorm (four shards on one
# device, one shard per device); 2 devices (two shards each) cost another CIERec
# compile, ~45 s of the suite, and are left to MF.
@pytest.mark.parametrize('name,counts', [('mf', (1, 2, 4)), ('cierec', (1, 4))], ids=['mf', 'cierec'])
def test_same_test_metrics_on_1_2_and_4_devices(tiny_data, name, counts):
  """Fixed shards make the step's arithmetic independent of the device count:
  the states after one epoch are bit-identical, hence so are the test metrics
  (which would differ by ~0.01 without train.batch_shards for the image models)."""
  c = tiny.config(os.path.dirname(tiny_data.path))
  c.model.name = name
  c.train.batch_shards = 4
  states, metrics = {}, {}
  evaluator = None
  for n in counts:
    model, states[n] = _one_epoch(c, tiny_data, jax.devices()[:n])
    evaluator = evaluator or eval_lib.Evaluator(model, tiny_data, c.eval)
    s = states[n]
    variables = {'params': s.params, **({'batch_stats': s.batch_stats} if s.batch_stats else {})}
    metrics[n] = evaluator(variables, 'test')
  for n in counts[1:]:
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(states[1]), jax.tree.leaves(states[n])):
      np.testing.assert_array_equal(a, b, err_msg=f'{n} devices: {jax.tree_util.keystr(path)}')
    for subset in eval_lib.SUBSETS:
      for k, v in metrics[1][subset].items():
        if k != 'users':
          assert abs(metrics[n][subset][k]['mean'] - v['mean']) <= 1e-3, (n, subset, k)
