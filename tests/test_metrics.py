"""Recall@K / NDCG@K on hand-computed cases."""

import numpy as np

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
