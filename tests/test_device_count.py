"""Same config and seed, same results on 1, 2 and 4 devices (train.batch_shards)."""

import os

import jax
import numpy as np
import pytest

from cierec_jax import evaluate as eval_lib
from cierec_jax import optim
from cierec_jax import train
from cierec_jax import train_step
from cierec_jax.data import sampler as sampler_lib
from tests import tiny

pytestmark = pytest.mark.slow


def _one_epoch(c, data, devices, items_on_device: bool):
  """One epoch of train.py's jitted step on a mesh of `devices`, its items
  gathered on the device from item tables, or on the host and sent raw (uint8:
  train.py's path when the tables do not fit, train.device_items_max_mb);
  returns (model, final state)."""
  model = train.build_model(c, data)
  sampler = sampler_lib.sampler_for(data, c.train.batch_size, c.train.seed)
  runner, optimizer = train.make_runner(c, data, model, sampler.steps_per_epoch, devices)
  hparams = optim.hyperparameters(c.train)
  example = sampler_lib.with_item_inputs(next(sampler.batches(0)), data)
  state = train_step.create_state(model, optimizer(), example, c.train.seed)
  dstate = runner.put_state(jax.tree.map(np.array, state))  # a copy: the state is donated
  items = runner.put_items(sampler_lib.item_tables(data)) if items_on_device else None
  key = jax.random.key(c.train.seed)
  # As many steps per call as train.py takes (train.steps_per_call=0): one call for
  # MF, calls of 4-8 steps for the image models (one step per call instead: the
  # same test time, 74 against 76 s).
  per_call = train_step.steps_per_call(0, model.spec, sampler.steps_per_epoch)
  for first, batches in sampler.calls(0, steps_per_call=per_call):
    if items is None:
      batches = sampler_lib.with_item_inputs(batches, data, raw=True)
    dstate, _ = runner.step(dstate, runner.put_batch(batches), items, key, first, hparams)
  return model, jax.device_get(dstate)


# CIERec holds MF(Image)'s encoder, BatchNorm and image path (mf_image: 96 s of the suite).
# Its 1 and 4 devices hold the two cases of a shard's BatchNorm (four shards on one
# device, one shard per device); 2 devices (two shards each) cost another CIERec
# compile, ~45 s of the suite, and are left to MF. The most devices read their items
# from tables on the device, the others from the host (raw): the two paths of
# train.py give the same bits too (the test of their own took 83 s).
@pytest.mark.parametrize('name,counts', [('mf', (1, 2, 4)), ('cierec', (1, 4))], ids=['mf', 'cierec'])
def test_same_test_metrics_on_1_2_and_4_devices(tiny_data, name, counts):
  """Fixed shards make the step's arithmetic independent of the device count
  and of where the items are gathered: the states after one epoch are
  bit-identical, hence so are the test metrics (which would differ by ~0.01
  without train.batch_shards for the image models)."""
  c = tiny.config(os.path.dirname(tiny_data.path))
  c.model.name = name
  c.train.batch_shards = 4
  states, metrics = {}, {}
  evaluator = None
  for n in counts:
    model, states[n] = _one_epoch(c, tiny_data, jax.devices()[:n], items_on_device=n == counts[-1])
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
