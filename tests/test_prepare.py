"""Preparation rules: splits, cold/warm, vocabulary and evaluation negatives."""

import tempfile

import numpy as np
import pytest

from cierec_jax.data import complement
from cierec_jax.data import prepare
from cierec_jax.data import raw as raw_lib
from cierec_jax.data.errors import DataError


def test_chronological_split_counts():
  counts = np.array([1, 2, 5, 10, 13])
  labels = prepare.chronological_split(counts, 0.6, 0.1)
  starts = np.concatenate([[0], np.cumsum(counts)])
  for n, a, b in zip(counts, starts[:-1], starts[1:]):
    lab = labels[a:b]
    n_train, n_valid = max(1, (6 * n) // 10), n // 10
    assert (lab == raw_lib.TRAIN).sum() == n_train
    assert (lab == raw_lib.VALID).sum() == n_valid
    assert (lab == raw_lib.TEST).sum() == n - n_train - n_valid
    assert np.all(np.diff(lab) >= 0), 'train, then valid, then test'


def test_split_proportions_and_chronology_per_user(tiny_data):
  d = tiny_data
  for u in range(d.num_users):
    a, b = d.user_indptr[u], d.user_indptr[u + 1]
    n, lab, t = b - a, d.user_splits[a:b], d.user_times[a:b]
    assert (lab == raw_lib.TRAIN).sum() == max(1, (6 * n) // 10)
    assert (lab == raw_lib.VALID).sum() == n // 10
    assert np.all(np.diff(t) >= 0)
    assert np.all(np.diff(lab) >= 0)
    # every train interaction is no later than every valid/test one
    if (lab != raw_lib.TRAIN).any():
      assert t[lab == raw_lib.TRAIN].max() <= t[lab != raw_lib.TRAIN].min()


def test_cold_warm_matches_definition(tiny_data):
  d = tiny_data
  users, items = d.split(raw_lib.TRAIN)
  counts = np.bincount(items, minlength=d.num_items)
  np.testing.assert_array_equal(d.train_counts, counts)
  np.testing.assert_array_equal(d.cold, counts <= 3)
  assert d.cold.any() and (~d.cold).any()
  assert d.stats['cold_items'] == d.cold.sum()
  # Users: the paper's partition, stored with the prepared dataset.
  per_user = np.bincount(users, minlength=d.num_users)
  np.testing.assert_array_equal(d.user_cold, per_user <= 3)
  assert d.user_cold.any() and (~d.user_cold).any()
  assert d.stats['cold_users'] == d.user_cold.sum() and d.stats['warm_users'] == (~d.user_cold).sum()
  assert d.stats['cold_user_share'] == d.user_cold.mean()


def test_preparing_leaves_no_temporary_folders(tmp_path, monkeypatch):
  from cierec_jax.data import load  # pylint: disable=g-import-not-at-top
  from tests import tiny  # pylint: disable=g-import-not-at-top
  scratch = tmp_path / 'scratch'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  c = tiny.config(str(tmp_path / 'data'))
  assert not load.is_prepared(c)
  load.prepare(c)
  assert load.is_prepared(c) and not list(scratch.iterdir())


def test_user_and_item_boundaries_are_separate_settings(tmp_path):
  from cierec_jax.data import load  # pylint: disable=g-import-not-at-top
  from tests import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.config(str(tmp_path))
  c.dataset.cold_max_train_interactions = 5
  c.dataset.cold_item_max_train_interactions = 1
  d = load.load(c)
  users, _ = d.split(raw_lib.TRAIN)
  np.testing.assert_array_equal(d.user_cold, np.bincount(users, minlength=d.num_users) <= 5)
  np.testing.assert_array_equal(d.cold, d.train_counts <= 1)


def test_negatives_disjoint_and_distinct(tiny_data):
  d = tiny_data
  assert d.negatives.shape == (d.num_users, 2, 40)
  for u in range(d.num_users):
    mine = set(d.user_items[d.user_indptr[u]:d.user_indptr[u + 1]].tolist())
    for r in range(d.negatives.shape[1]):
      neg = d.negatives[u, r]
      assert len(set(neg.tolist())) == len(neg)
      assert not mine & set(neg.tolist())
      assert neg.min() >= 0 and neg.max() < d.num_items


def test_nth_free_matches_brute_force():
  rng = np.random.default_rng(0)
  users = rng.integers(0, 7, 60)
  items = rng.integers(0, 20, 60)
  csr = complement.Csr(users, items, 7, 20)
  for u in range(7):
    free = sorted(set(range(20)) - set(items[users == u].tolist()))
    got = csr.nth_free(np.full(len(free), u), np.arange(len(free)))
    np.testing.assert_array_equal(got, free)
  assert csr.contains(users, items).all()


def test_too_few_free_items_is_clear_error():
  csr = complement.Csr(np.array([0, 0]), np.array([0, 1]), 1, 4)
  with pytest.raises(DataError, match='eval.num_negatives=3'):
    prepare.evaluation_negatives(csr, 0, 1, 3)


def _raw(elements, inter):
  u, i, t = (np.array(x) for x in zip(*inter))
  return raw_lib.RawData(
      modality=raw_lib.FEATURES, item_keys=[f'i{k}' for k in range(len(elements))],
      item_elements=elements, missing_source={1: 'no image'},
      load_source=lambda k: np.zeros(2, np.float32), source_shape=(2,),
      user_keys=['a', 'b', 'c'], inter_user=u, inter_item=i, inter_time=t.astype(float))


def test_vocabulary_drops_and_truncation():
  elements = [['x', 'y', 'z'], ['x'], ['y', 'x', 'w'], ['y', 'q', 'x', 'y'], [], ['z'], ['x']] + [[]] * 5
  inter = [(0, 0, 1), (0, 2, 2), (0, 1, 3), (1, 3, 1), (1, 0, 2), (1, 3, 5), (2, 1, 1), (0, 4, 4), (0, 5, 5)]
  p = prepare.prepare(_raw(elements, inter), prepare.PrepSettings(
      train_fraction=0.5, valid_fraction=0.25, min_element_count=2, max_elements=1,
      num_negatives=2, repeats=1))
  # item 1 dropped (no source); counts over kept items: x:5, y:2, z:2, w:1, q:1.
  assert p.vocab == ['<pad>', 'x', 'y', 'z']
  assert p.dropped == [('i1', 'no image')]
  assert p.stats['dropped_items'] == 1 and p.stats['dropped_interactions'] == 2
  assert p.stats['duplicate_interactions'] == 1  # (1, 3) twice: the earliest is kept
  assert p.stats['dropped_users'] == 1  # user c only touched the dropped item
  assert [e.tolist() for e in p.item_elements[:3]] == [[1], [2], [2]]  # truncated to 1
  assert p.stats['items_with_truncated_elements'] == 3
  assert p.item_keys[:3] == ['i0', 'i2', 'i3']


@pytest.mark.parametrize('inter, split_labels, message', [
    # 3 interactions each: floor(0.1 * 3) = 0 valid for every user.
    ([(0, 0, 1), (0, 2, 2), (0, 3, 3), (1, 0, 1), (1, 2, 2), (1, 4, 3)], None,
     r'the valid split is empty after preparation \(with dataset.train_fraction=0.6, '
     r'dataset.valid_fraction=0.1 and at most 3 interactions per user\)'),
    # Official labels whose only test interaction is on item 1, which has no source.
    ([(0, 0, 1), (0, 2, 2), (1, 1, 3)], [0, 1, 2],
     r"the test split is empty after preparation \(with the source's split labels, 1 "
     r'interactions of dropped items removed\)'),
])
def test_empty_split_is_refused(inter, split_labels, message):
  raw = _raw([[]] * 6, inter)
  if split_labels is not None:
    raw.inter_split = np.array(split_labels, np.int8)
  with pytest.raises(DataError, match=message):
    prepare.prepare(raw, prepare.PrepSettings(num_negatives=1, repeats=1))


def test_load_refuses_ids_outside_their_table():
  from cierec_jax.data import load
  load._check_ids(np.array([0, 4, 2]), 5, "the users' items", '/x/users')  # in range: no error
  for bad in (5, -1):
    with pytest.raises(DataError, match=rf"/x/users: the users' items hold id {bad}, outside \[0, 5\)"):
      load._check_ids(np.array([[0, 4], [bad, 1]]), 5, "the users' items", '/x/users')
