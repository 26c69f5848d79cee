"""Operations across the rows of a training batch: all devices' rows under pmap,
so that batch-wide sums and in-batch negatives match a one-device run."""

import jax
import jax.numpy as jnp


def batch_wide(x, axis_name=None):
  """x: [N, ...] this device's rows -> [P * N, ...] every device's rows under
  pmap (`axis_name`, in device order); x itself otherwise."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def per_row_sum(ids, grads, axis_name=None):
  """The gradient w.r.t. a table, read back at each lookup.

  ids: [N] int rows looked up; grads: [N, k] float32 the loss gradient w.r.t.
  each lookup -> [N, k]: for each lookup, the sum of the gradients of every
  lookup of the same row in the batch. Written as an [N, N] row-equality
  product so that its cost does not grow with the table.
  """
  all_ids, all_grads = batch_wide(ids, axis_name), batch_wide(grads, axis_name)
  same = (ids[:, None] == all_ids[None, :]).astype(grads.dtype)
  return jnp.matmul(same, all_grads, precision=jax.lax.Precision.HIGHEST)


def candidates(pos, items, weights, axis_name=None):
  """Which in-batch candidates each anchor is contrasted with.

  pos: [B] each anchor's positive item; items: [N] this device's candidate
  items, the first B being `pos`; weights: [N] their rows' weights. Returns
  (positive: [B] the column of each anchor's positive among every device's
  candidates, valid: [B, N'] bool): the positive, and the candidates of
  weight > 0 that are not another copy of the anchor's positive item.
  """
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * items.shape[0]
  positive = offset + jnp.arange(pos.shape[0])
  all_items, all_weights = batch_wide(items, axis_name), batch_wide(weights, axis_name)
  columns = jnp.arange(all_items.shape[0])
  valid = (all_weights[None, :] > 0) & (all_items[None, :] != pos[:, None])
  return positive, valid | (columns[None, :] == positive[:, None])
