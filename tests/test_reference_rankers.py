"""Untrained rankers evaluated through the same candidate metrics as the models."""

import numpy as np

from cierec_jax.data import load
from cierec_jax.data import raw as raw_lib
from experiments import reference_rankers
from tests import tiny


def test_perfect_and_reversed_scores(tmp_path):
  data = load.load(tiny.config(str(tmp_path / 'data')))
  users, items = data.split(raw_lib.TEST)
  truth = np.zeros((data.num_users, data.num_items), np.float32)
  truth[users, items] = 1.0
  perfect = reference_rankers.evaluate_scores(lambda u: truth[u], data, 'test', ks=(10,), batch_size=7)
  reversed_ = reference_rankers.evaluate_scores(lambda u: -truth[u], data, 'test', ks=(10,), batch_size=7)
  for subset in ('all', 'cold', 'warm'):
    assert perfect[subset]['users'] > 0
    assert perfect[subset]['ndcg@10']['mean'] == 1.0
    assert reversed_[subset]['recall@10']['mean'] == 0.0


def test_rankers_fit_the_dataset(tmp_path):
  data = load.load(tiny.config(str(tmp_path / 'data')))
  found = reference_rankers.rankers(data)
  assert sorted(found) == ['annotations', 'popularity', 'random']  # images: no feature cosine
  scores = found['popularity'](np.array([0, 3]))
  np.testing.assert_array_equal(scores[1], data.train_counts)
  # A user's own training elements score the items that carry them above those that do not.
  users, items = data.split(raw_lib.TRAIN)
  u = users[0]
  mine = set(data.item_elements[items[users == u]].ravel()) - {0}
  s = found['annotations'](np.array([u]))[0]
  shares = np.array([bool(set(e) & mine) for e in data.item_elements])
  assert s[shares].min() > 0
  assert np.all(s[~shares] == 0)
