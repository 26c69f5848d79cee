"""Recall@K / NDCG@K on hand-computed cases."""

import numpy as np
import pytest

from cierec_jax import metrics

LOG2 = np.log2


def _run(scores, labels, valid=None, ks=(1, 2, 3)):
  scores = np.asarray(scores, np.float32)
  labels = np.asarray(labels, bool)
  valid = np.ones_like(labels) if valid is None else np.asarray(valid, bool)
  r, n, p = metrics.ranking_metrics(scores, labels, valid, ks)
  return np.asarray(r), np.asarray(n), np.asarray(p)


def test_several_positives():
  # ranking: c0 (pos), c1, c2 (pos), c3, c4 (pos)
  r, n, p = _run([[5, 4, 3, 2, 1]], [[1, 0, 1, 0, 1]])
  assert p.tolist() == [3]
  np.testing.assert_allclose(r[0], [1 / 3, 1 / 3, 2 / 3])
  idcg = [1, 1 + 1 / LOG2(3), 1 + 1 / LOG2(3) + 1 / LOG2(4)]
  dcg = [1, 1, 1 + 1 / LOG2(4)]
  np.testing.assert_allclose(n[0], np.array(dcg) / np.array(idcg), rtol=1e-6)


def test_ties_rank_positive_below_negatives():
  # the positive ties with two negatives at the top: it ranks third
  r, n, _ = _run([[1.0, 1.0, 1.0, 0.0]], [[0, 1, 0, 0]])
  np.testing.assert_allclose(r[0], [0, 0, 1])
  np.testing.assert_allclose(n[0], [0, 0, 1 / LOG2(4)], rtol=1e-6)
  # all tied: the positive is last whatever its column
  r, _, _ = _run([[2.0, 2.0, 2.0]], [[1, 0, 0]], ks=(2, 3))
  np.testing.assert_allclose(r[0], [0, 1])


def test_k_larger_than_candidates():
  r, n, _ = _run([[0.3, 0.9]], [[1, 0]], ks=(10, 20))
  np.testing.assert_allclose(r[0], [1, 1])
  np.testing.assert_allclose(n[0], [1 / LOG2(3)] * 2, rtol=1e-6)


def test_invalid_candidates_are_removed():
  # c1 is a positive outside the subset (invalid): it must not push c0 down
  r, n, p = _run([[0.5, 0.9, 0.1]], [[1, 1, 0]], valid=[[1, 0, 1]], ks=(1,))
  assert p.tolist() == [1]
  np.testing.assert_allclose(r[0], [1])
  np.testing.assert_allclose(n[0], [1])


def test_user_without_positive_reports_zero_positives():
  r, n, p = _run([[0.5, 0.9], [0.5, 0.9]], [[0, 0], [1, 0]], ks=(1, 2))
  assert p.tolist() == [0, 1]
  assert np.isfinite(r).all() and np.isfinite(n).all()


@pytest.mark.parametrize('ks', [(1, 3, 5, 20), (1, 2)])
def test_candidate_metrics_from_ranks_equal_sorting_each_list(ks):
  """evaluate.candidate_metrics counts ranks against the best max(ks)
  negatives; ranking_metrics sorts each (repeat, subset) list. Integer scores
  make ties common, between positives and between a positive and negatives;
  ks=(1, 2) keeps 2 of the 9 negatives."""
  from cierec_jax import evaluate

  rng = np.random.default_rng(0)
  b, p, r, k = 6, 7, 3, 9
  pos_scores = rng.integers(0, 6, (b, p)).astype(np.float32)
  neg_scores = rng.integers(0, 6, (b, r, k)).astype(np.float32)
  pos_mask = rng.random((b, p)) < 0.7
  pos_mask[0] = False  # a user without positives
  pos_cold = (rng.random((b, p)) < 0.4) & pos_mask
  user_cold = rng.random(b) < 0.5
  out = evaluate.candidate_metrics(pos_scores, neg_scores, pos_mask, pos_cold, user_cold, ks)
  keep = evaluate.subset_masks(pos_mask, pos_cold, user_cold)
  labels = np.concatenate([np.ones((b, p), bool), np.zeros((b, k), bool)], axis=1)
  for s in range(len(evaluate.SUBSETS)):
    valid = np.concatenate([keep[s], np.ones((b, k), bool)], axis=1)
    for rep in range(r):
      scores = np.concatenate([pos_scores, neg_scores[:, rep]], axis=1)
      rec, nd, num = metrics.ranking_metrics(scores, labels, valid, ks)
      np.testing.assert_array_equal(np.asarray(out['num_pos'])[:, rep, s], np.asarray(num))
      has = np.asarray(num) > 0  # users outside a subset have no metric
      assert has.any() and not has.all()
      np.testing.assert_allclose(np.asarray(out['recall'])[has, rep, s], np.asarray(rec)[has], atol=1e-6)
      np.testing.assert_allclose(np.asarray(out['ndcg'])[has, rep, s], np.asarray(nd)[has], atol=1e-6)
