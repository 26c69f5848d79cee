"""Recall@K and NDCG@K over sampled candidates (DESIGN 6), as pure functions."""

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
