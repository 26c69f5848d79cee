"""Uniform sampling of items outside a user's positive set, exact and vectorised.

A user's free items are the items not in their (sorted, unique) positive set.
The x-th free item is x plus the number of positives whose "shifted" value
(positive minus its rank in the set) is <= x; with a per-user offset the
shifted values of all users form one sorted array, so one searchsorted maps
any number of (user, x) pairs at once.
"""

import numpy as np


class Csr:
  """Per-user sorted unique item sets: indices[indptr[u]:indptr[u+1]]."""

  def __init__(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int):
    """users, items: [N] int. Duplicate (user, item) pairs count once."""
    key = np.unique(users.astype(np.int64) * num_items + items.astype(np.int64))
    self.num_users = num_users
    self.num_items = num_items
    self._flat = key
    self.indices = (key % num_items).astype(np.int64)
    rows = key // num_items
    self.indptr = np.searchsorted(rows, np.arange(num_users + 1)).astype(np.int64)
    rank = np.arange(len(key)) - self.indptr[rows]
    # Shifted positives, offset by user so the whole array is sorted.
    self._keys = rows * (num_items + 1) + (self.indices - rank)

  def counts(self) -> np.ndarray:
    """[U] int64 positives per user."""
    return np.diff(self.indptr)

  def row(self, u: int) -> np.ndarray:
    return self.indices[self.indptr[u]:self.indptr[u + 1]]

  def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[N] bool: is items[n] in users[n]'s set."""
    if not len(self._flat):
      return np.zeros(len(users), bool)
    key = users.astype(np.int64) * self.num_items + items
    pos = np.minimum(np.searchsorted(self._flat, key), len(self._flat) - 1)
    return self._flat[pos] == key

  def free_counts(self) -> np.ndarray:
    """[U] int64 number of items outside each user's set."""
    return self.num_items - self.counts()

  def nth_free(self, users: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The x-th (0-based) item outside users' sets. users, x: [N] -> [N] int64."""
    users = users.astype(np.int64)
    query = users * (self.num_items + 1) + x
    below = np.searchsorted(self._keys, query, side='right') - self.indptr[users]
    return x + below

  def sample_free(self, rng: np.random.Generator, users: np.ndarray,
                  order: np.ndarray | None = None) -> np.ndarray:
    """One uniform item outside each user's set, with replacement. [N] -> [N].

    order: [N], when users is grouped_users[order] for users grouped in
    ascending order (an epoch's shuffle): the same draws, searched in user
    order, where consecutive searches share cached rows (2x faster on
    MovieLens-100K's 60k draws).
    """
    free = self.free_counts()[users]
    if np.any(free <= 0):
      bad = int(users[np.argmin(free)])
      raise ValueError(f'user {bad} has interacted with every item; no negative exists')
    x = np.minimum(np.floor(rng.random(len(users)) * free).astype(np.int64), free - 1)
    if order is None:
      return self.nth_free(users, x)
    grouped = np.empty_like(order)
    grouped[order] = np.arange(len(order))  # the inverse permutation
    return self.nth_free(users[grouped], x[grouped])[order]

  def sample_free_distinct(self, rng: np.random.Generator, user: int, size: int) -> np.ndarray:
    """`size` distinct uniform items outside one user's set. -> [size] int64."""
    x = rng.choice(int(self.free_counts()[user]), size=size, replace=False)
    return self.nth_free(np.full(size, user), x.astype(np.int64))
