"""The evaluation's subsets on a hand-built split: the user partition (the
paper's cold/warm), the item partition, and All = w Cold + (1 - w) Warm."""

import numpy as np

from cierec_jax import evaluate as eval_lib


def _split():
  """4 users, 2 repeats, 3 negatives each; users 0 and 2 are cold users."""
  rng = np.random.default_rng(3)
  pos_mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], bool)
  pos_cold = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 1], [1, 1, 0]], bool) & pos_mask
  user_cold = np.array([True, False, True, False])
  pos_scores = rng.normal(size=pos_mask.shape).astype(np.float32)
  neg_scores = rng.normal(size=(4, 2, 3)).astype(np.float32)
  return pos_scores, neg_scores, pos_mask, pos_cold, user_cold


def _by_hand(pos_scores, neg_scores, keep):
  """Recall@2 per (user, repeat) from one user's own candidate list, or None."""
  out = np.full((4, 2), np.nan)
  for u in range(4):
    for r in range(2):
      pos = pos_scores[u][keep[u]]
      if not len(pos):
        continue
      scores = np.concatenate([pos, neg_scores[u, r]])
      labels = np.arange(len(scores)) < len(pos)
      top = np.argsort(-scores, kind='stable')[:2]
      out[u, r] = labels[top].sum() / len(pos)
  return out


def test_subsets_follow_their_definitions_and_the_identity_holds():
  pos_scores, neg_scores, pos_mask, pos_cold, user_cold = _split()
  out = eval_lib.candidate_metrics(pos_scores, neg_scores, pos_mask, pos_cold, user_cold, (2,))
  recall, num = np.asarray(out['recall'])[..., 0], np.asarray(out['num_pos'])
  S = eval_lib.SUBSETS
  keeps = {'all': pos_mask, 'cold': pos_mask & user_cold[:, None], 'warm': pos_mask & ~user_cold[:, None],
           'cold_item': pos_cold, 'warm_item': pos_mask & ~pos_cold}
  for name, keep in keeps.items():
    expected = _by_hand(pos_scores, neg_scores, keep)
    s = S.index(name)
    present = ~np.isnan(expected)
    np.testing.assert_array_equal(num[:, :, s] > 0, present, err_msg=name)
    np.testing.assert_allclose(recall[:, :, s][present], expected[present], atol=1e-6, err_msg=name)
  # The user partition: a cold user is in 'cold' with all its positives.
  assert (num[:, :, S.index('cold')] > 0).tolist() == [[True] * 2, [False] * 2, [True] * 2, [False] * 2]

  agg = eval_lib.aggregate(np.asarray(out['recall']), np.asarray(out['ndcg']), num, (2,))
  w = agg['cold']['users'] / agg['all']['users']
  assert w == 0.5
  for metric in ('recall@2', 'ndcg@2'):
    mix = w * agg['cold'][metric]['mean'] + (1 - w) * agg['warm'][metric]['mean']
    np.testing.assert_allclose(agg['all'][metric]['mean'], mix, rtol=1e-6)
  # The item partition does not obey it: user 3 is in both item subsets.
  assert agg['cold_item']['users'] + agg['warm_item']['users'] > agg['all']['users']


def test_subset_masks_name_each_subset():
  _, _, pos_mask, pos_cold, user_cold = _split()
  keep = eval_lib.subset_masks(pos_mask, pos_cold, user_cold)
  assert keep.shape == (len(eval_lib.SUBSETS),) + pos_mask.shape
  np.testing.assert_array_equal(keep[eval_lib.SUBSETS.index('warm')], pos_mask & ~user_cold[:, None])
  np.testing.assert_array_equal(keep[eval_lib.SUBSETS.index('warm_item')], pos_mask & ~pos_cold)
