"""The BPR sampler: valid negatives, exact epochs, deterministic shards."""

import collections

import numpy as np
import pytest

from cierec_jax.data import raw as raw_lib
from cierec_jax.data import sampler as sampler_lib


def test_negative_is_never_a_train_positive(tiny_data):
  s = sampler_lib.sampler_for(tiny_data, 32, seed=0)
  train = s.positives
  for epoch in range(3):
    t = s.epoch_triples(epoch)
    assert not train.contains(t['user'], t['neg']).any()
    assert train.contains(t['user'], t['pos']).all()


def test_negatives_cover_the_free_items_uniformly():
  users = np.zeros(5, np.int64)
  items = np.array([0, 2, 4, 6, 8])
  s = sampler_lib.BPRSampler(users, items, 1, 10, 5, seed=0)
  negs = np.concatenate([s.epoch_triples(e)['neg'] for e in range(2000)])
  freq = np.bincount(negs, minlength=10) / len(negs)
  np.testing.assert_allclose(freq[[1, 3, 5, 7, 9]], 0.2, atol=0.01)
  assert freq[[0, 2, 4, 6, 8]].sum() == 0


def test_negatives_searched_in_user_order_are_the_same_draws(tiny_data):
  s = sampler_lib.sampler_for(tiny_data, 32, seed=0)
  assert s._grouped  # interactions come grouped by user, so draw() takes the user-order search
  order = np.random.default_rng(1).permutation(len(s.users))
  users = s.users[order]
  shuffled = s.positives.sample_free(np.random.default_rng(2), users)
  grouped = s.positives.sample_free(np.random.default_rng(2), users, order)
  np.testing.assert_array_equal(grouped, shuffled)
  assert len(np.unique(shuffled)) > 1


def test_epoch_visits_each_interaction_once_with_padding(tiny_data):
  s = sampler_lib.sampler_for(tiny_data, 32, seed=1)
  batches = list(s.batches(0))
  assert len(batches) == s.steps_per_epoch
  assert all(b['user'].shape == (32,) for b in batches)
  real = [(u, i) for b in batches for u, i, w in zip(b['user'], b['pos'], b['weight']) if w]
  users, items = tiny_data.split(raw_lib.TRAIN)
  assert collections.Counter(real) == collections.Counter(zip(users.tolist(), items.tolist()))


def test_deterministic_given_seed_and_epoch(tiny_data):
  a = sampler_lib.sampler_for(tiny_data, 32, seed=5).epoch_triples(2)
  b = sampler_lib.sampler_for(tiny_data, 32, seed=5).epoch_triples(2)
  c = sampler_lib.sampler_for(tiny_data, 32, seed=5).epoch_triples(3)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['user'], c['user'])


def test_epoch_drawn_ahead_equals_epoch_drawn_now(tiny_data):
  """epoch_triples draws the next epoch in the background; in order, out of
  order or repeated, each epoch is the same as its direct draw."""
  s = sampler_lib.sampler_for(tiny_data, 32, seed=5)
  fresh = sampler_lib.sampler_for(tiny_data, 32, seed=5)
  for epoch in (0, 1, 2, 2, 5, 0, 1):
    got, want = s.epoch_triples(epoch), fresh.draw(epoch)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f'epoch {epoch}, {k}')


@pytest.mark.parametrize('count', [2, 4])
def test_process_shards_partition_the_epoch(tiny_data, count):
  whole = sampler_lib.sampler_for(tiny_data, 32, seed=0)
  shards = [list(sampler_lib.sampler_for(tiny_data, 32, 0, p, count).batches(1)) for p in range(count)]
  for step, full in enumerate(whole.batches(1)):
    for k in full:
      joined = np.concatenate([shards[p][step][k] for p in range(count)])
      np.testing.assert_array_equal(joined, full[k])


def test_resume_from_step(tiny_data):
  s = sampler_lib.sampler_for(tiny_data, 32, seed=0)
  full = list(s.batches(0))
  tail = list(s.batches(0, start_step=2))
  for a, b in zip(full[2:], tail):
    np.testing.assert_array_equal(a['neg'], b['neg'])


def test_item_inputs(tiny_data):
  s = sampler_lib.sampler_for(tiny_data, 8, seed=0)
  b = sampler_lib.with_item_inputs(next(s.batches(0)), tiny_data)
  assert b['pos_content'].shape == (8, 16, 16, 3) and b['pos_content'].dtype == np.float32
  np.testing.assert_array_equal(b['neg_lengths'], tiny_data.item_lengths[b['neg']])
  b = sampler_lib.with_item_inputs(next(s.batches(0)), tiny_data, annotations=False)
  assert not b['pos_lengths'].any()


def test_batch_not_divisible_by_processes(tiny_data):
  with pytest.raises(ValueError, match='train.batch_size=30'):
    sampler_lib.sampler_for(tiny_data, 30, 0, 0, 4)


def test_calls_stack_the_batches_and_end_where_asked(tiny_data):
  s = sampler_lib.sampler_for(tiny_data, 32, seed=0)
  spe = s.steps_per_epoch
  assert spe >= 6
  full = list(s.batches(1))
  calls = list(s.calls(1, 1, 3, ends_call=lambda step: step == spe + 2))
  spans = [(i, i + len(b['user'])) for i, b in calls]
  assert spans == [(1, 2)] + [(lo, min(lo + 3, spe)) for lo in range(2, spe, 3)]
  steps = [{k: v[j] for k, v in b.items()} for _, b in calls for j in range(len(b['user']))]
  for a, b in zip(full[1:], steps, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_device_item_inputs_equal_the_hosts(tiny_data):
  """The three ways a batch's item inputs reach the step give the same bits:
  normalised on the host, sent raw (uint8) and finished on the device, and
  gathered from item tables on the device."""
  import jax  # pylint: disable=g-import-not-at-top
  _, stacked = next(sampler_lib.sampler_for(tiny_data, 8, seed=0).calls(0, 0, 2))
  host = sampler_lib.with_item_inputs(stacked, tiny_data)
  raw = sampler_lib.with_item_inputs(stacked, tiny_data, raw=True)
  assert raw['pos_content'].dtype == np.uint8 and host['pos_content'].dtype == np.float32
  finish = jax.jit(lambda b, t: sampler_lib.device_item_inputs(b, t, tiny_data.modality))
  tables = jax.device_put(sampler_lib.item_tables(tiny_data))
  for device in (finish(raw, None), finish(stacked, tables)):
    assert host.keys() == device.keys() and host['pos_content'].shape == (2, 8, 16, 16, 3)
    for k in host:
      np.testing.assert_array_equal(device[k], host[k], err_msg=k)


def test_normalize_is_the_same_on_host_and_device_and_refuses_floats():
  import jax  # pylint: disable=g-import-not-at-top
  from cierec_jax.data import images  # pylint: disable=g-import-not-at-top
  every = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 2, 1, 3))
  host, device = images.normalize(every), np.asarray(jax.jit(images.normalize)(every))
  assert host.dtype == device.dtype == np.float32 and host.shape == every.shape
  np.testing.assert_array_equal(device, host)
  formula = (every / 255.0 - images.MEAN_RGB) / images.STDDEV_RGB  # float64
  np.testing.assert_allclose(host, formula, rtol=0, atol=1e-6)
  with pytest.raises(TypeError, match='uint8'):
    images.normalize(host)
  with pytest.raises(TypeError, match='uint8'):
    jax.jit(images.normalize)(host)
