"""Recall@K and NDCG@K over sampled candidates (DESIGN 6), as pure functions."""

import jax
import jax.numpy as jnp


def ranking_metrics(scores, labels, valid, ks):
  """Per-user Recall@K and NDCG@K.

  scores: [B, C] float32; labels: [B, C] bool (positive); valid: [B, C] bool
  (the candidate belongs to the evaluated list); ks: tuple of ints.
  Candidates are ranked by score, descending; a positive ties below
  equal-scored negatives. Returns recall, ndcg: [B, len(ks)] float32 and
  num_pos: [B] int32 (a user with num_pos == 0 has no metric and must be
  excluded from averages, not counted as zero).
  """
  labels = labels & valid
  # Invalid candidates sort last; among equal scores negatives come first.
  key = jnp.where(valid, -scores, jnp.inf)
  order = jnp.lexsort((labels.astype(jnp.int32), key), axis=-1)
  hits = jnp.take_along_axis(labels, order, axis=-1).astype(jnp.float32)
  num_pos = labels.sum(-1)
  positions = jnp.arange(1, scores.shape[-1] + 1, dtype=jnp.float32)
  discount = 1.0 / jnp.log2(positions + 1.0)
  recall, ndcg = [], []
  for k in ks:
    top = positions <= k
    denom = jnp.maximum(num_pos, 1).astype(jnp.float32)
    recall.append(jnp.sum(hits * top, -1) / denom)
    dcg = jnp.sum(hits * discount * top, -1)
    ideal = jnp.sum(discount * (positions <= jnp.minimum(num_pos, k)[:, None]), -1)
    ndcg.append(dcg / jnp.maximum(ideal, 1e-12))
  return jnp.stack(recall, -1), jnp.stack(ndcg, -1), num_pos.astype(jnp.int32)


def positive_ranks(pos_scores, neg_scores, keep, depth: int):
  """Each positive's 0-based rank in the list [kept positives; negatives], in
  ranking_metrics' order (a positive ranks below negatives of equal score and
  below equal-scored positives listed before it), exact below `depth`.

  Counting instead of sorting every list: only the `depth` best negatives of
  each repeat can rank above a positive that ranks below `depth`, and they
  are shared by every subset. pos_scores: [B, P] float32; neg_scores:
  [B, R, K] float32; keep: [S, B, P] bool (the positives in each subset's
  lists). Returns [S, B, R, P] int32, >= depth where the rank is (and
  meaningless where keep is False).
  """
  top = jax.lax.top_k(neg_scores, min(depth, neg_scores.shape[-1]))[0]  # [B, R, depth]
  negatives_before = jnp.sum(top[:, :, None, :] >= pos_scores[:, None, :, None], -1)  # [B, R, P]
  i = jnp.arange(pos_scores.shape[-1])
  s_i, s_j = pos_scores[:, :, None], pos_scores[:, None, :]
  before = (s_i > s_j) | ((s_i == s_j) & (i[:, None] < i[None, :]))  # [B, P (i), P (j)]
  # float32 counts are exact (P < 2^24) and run as a batched matmul.
  positives_before = jnp.einsum('sbi,bij->sbj', keep.astype(jnp.float32), before.astype(jnp.float32))
  return negatives_before[None] + positives_before.astype(jnp.int32)[:, :, None, :]


def metrics_from_ranks(ranks, keep, ks):
  """Recall@K and NDCG@K of lists whose positives have these ranks.

  ranks: [S, B, R, P] int32 (positive_ranks, exact below max(ks)); keep:
  [S, B, P] bool. Returns
  recall, ndcg: [S, B, R, len(ks)] float32 and num_pos: [S, B] int32, as
  ranking_metrics returns them for each list.
  """
  keep4 = keep[:, :, None, :]
  num_pos = keep.sum(-1)
  denom = jnp.maximum(num_pos, 1).astype(jnp.float32)[:, :, None]
  discount = 1.0 / jnp.log2(ranks.astype(jnp.float32) + 2.0)
  positions = jnp.arange(1, max(ks) + 1, dtype=jnp.float32)
  recall, ndcg = [], []
  for k in ks:
    hit = keep4 & (ranks < k)
    recall.append(jnp.sum(hit, -1) / denom)
    ideal = jnp.sum((1.0 / jnp.log2(positions + 1.0)) * (positions <= jnp.minimum(num_pos, k)[..., None]), -1)
    ndcg.append(jnp.sum(jnp.where(hit, discount, 0.0), -1) / jnp.maximum(ideal, 1e-12)[:, :, None])
  return jnp.stack(recall, -1), jnp.stack(ndcg, -1), num_pos.astype(jnp.int32)
