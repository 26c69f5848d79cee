"""The shared preparation rules (DESIGN 3.3-3.4): drops, splits, vocabulary,
cold/warm users and items, and the fixed evaluation negatives, applied to any
reader's RawData."""

import collections
import dataclasses
import fractions

import numpy as np

from cierec_jax.data import complement
from cierec_jax.data import raw as raw_lib
from cierec_jax.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class PrepSettings:
  seed: int = 0
  train_fraction: float = 0.6
  valid_fraction: float = 0.1
  cold_max_train_interactions: int = 3  # users (the paper's cold/warm partition)
  cold_item_max_train_interactions: int = 3  # items (the item cold-start extra)
  min_element_count: int = 1
  max_elements: int = 20
  num_negatives: int = 500
  repeats: int = 5


@dataclasses.dataclass
class Prepared:
  """Numeric tables ready to be written.

  item_raw: [I] raw item index of each kept item (to load its source).
  item_elements: [I] int32 arrays of element ids (1-based; 0 is padding).
  vocab: [E + 1] element names, vocab[0] = '<pad>'.
  train_counts: [I] int64; cold: [I] bool, the cold items.
  user_indptr: [U + 1]; user_items, user_times, user_splits: [N] grouped by user
    in chronological order. user_cold: [U] bool, the cold users.
  negatives: [U, R, K] int32 evaluation negatives.
  """
  item_keys: list
  item_raw: np.ndarray
  item_elements: list
  vocab: list
  train_counts: np.ndarray
  cold: np.ndarray
  user_keys: list
  user_indptr: np.ndarray
  user_items: np.ndarray
  user_times: np.ndarray
  user_splits: np.ndarray
  user_cold: np.ndarray
  negatives: np.ndarray
  dropped: list  # (item key, reason)
  stats: dict


def chronological_split(counts: np.ndarray, train_fraction: float, valid_fraction: float) -> np.ndarray:
  """Split labels for interactions grouped by user in time order.

  counts: [U] interactions per user. Returns [sum(counts)] int8 with
  n_train = max(1, floor(f_t n)), n_valid = floor(f_v n), the rest test.
  Fractions are read as exact decimals so 0.6 * 5 is exactly 3.
  """
  ft = fractions.Fraction(str(train_fraction))
  fv = fractions.Fraction(str(valid_fraction))
  counts = counts.astype(np.int64)
  n_train = np.maximum(1, counts * ft.numerator // ft.denominator)
  n_valid = counts * fv.numerator // fv.denominator
  n_valid = np.minimum(n_valid, counts - n_train)
  starts = np.repeat(np.cumsum(counts) - counts, counts)
  rank = np.arange(counts.sum()) - starts
  n_train_e = np.repeat(n_train, counts)
  n_valid_e = np.repeat(n_valid, counts)
  return np.where(rank < n_train_e, raw_lib.TRAIN,
                  np.where(rank < n_train_e + n_valid_e, raw_lib.VALID, raw_lib.TEST)).astype(np.int8)


def build_vocab(item_elements, min_count: int):
  """Element names kept if they occur in >= min_count items; most frequent first."""
  counts = collections.Counter()
  for names in item_elements:
    counts.update(set(names))
  kept = sorted((n for n, c in counts.items() if c >= min_count), key=lambda n: (-counts[n], n))
  return ['<pad>'] + kept, len(counts) - len(kept)


def evaluation_negatives(pos: complement.Csr, seed: int, repeats: int, size: int) -> np.ndarray:
  """[U, R, K] int32: per (user, repeat) K distinct items the user never touched,
  seeded by (seed, repeat, user) so any subset of users is reproducible alone."""
  short = np.flatnonzero(pos.free_counts() < size)
  if len(short):
    u = int(short[0])
    raise DataError(
        f'eval.num_negatives={size} but user {u} has only {int(pos.free_counts()[u])} '
        f'never-interacted items ({len(short)} users are short); lower eval.num_negatives')
  out = np.empty((pos.num_users, repeats, size), np.int32)
  for u in range(pos.num_users):
    for r in range(repeats):
      out[u, r] = pos.sample_free_distinct(np.random.default_rng([seed, r, u]), u, size)
  return out


def prepare(raw: raw_lib.RawData, s: PrepSettings) -> Prepared:
  """Applies DESIGN 3.3-3.4 to a reader's output."""
  n_raw_items = len(raw.item_keys)
  keep_item = np.ones(n_raw_items, bool)
  keep_item[list(raw.missing_source)] = False
  dropped = [(raw.item_keys[i], why) for i, why in sorted(raw.missing_source.items())]
  stats = dict(raw.stats)

  # Interactions of dropped items go with them (counted).
  keep_inter = keep_item[raw.inter_item]
  stats['dropped_interactions'] = int((~keep_inter).sum())
  u, i, t = raw.inter_user[keep_inter], raw.inter_item[keep_inter], raw.inter_time[keep_inter]
  sp = None if raw.inter_split is None else raw.inter_split[keep_inter]

  # Repeated (user, item) pairs keep their earliest interaction (stable in file order).
  order = np.lexsort((np.arange(len(u)), t, i, u))
  first = np.ones(len(order), bool)
  first[1:] = (u[order][1:] != u[order][:-1]) | (i[order][1:] != i[order][:-1])
  stats['duplicate_interactions'] = int((~first).sum())
  sel = np.sort(order[first])
  u, i, t = u[sel], i[sel], t[sel]
  sp = None if sp is None else sp[sel]

  # Compact ids: kept items in source order; users with interactions, in source order.
  item_raw = np.flatnonzero(keep_item)
  item_new = np.full(n_raw_items, -1, np.int64)
  item_new[item_raw] = np.arange(len(item_raw))
  users_present = np.unique(u)
  stats['dropped_users'] = int(len(raw.user_keys) - len(users_present))
  user_new = np.full(len(raw.user_keys), -1, np.int64)
  user_new[users_present] = np.arange(len(users_present))
  u, i = user_new[u], item_new[i]
  num_users, num_items = len(users_present), len(item_raw)
  if num_items == 0 or num_users == 0:
    raise DataError('no interactions left after dropping items without an image/feature')

  # Group by user, chronological (stable: ties keep file order).
  order = np.lexsort((np.arange(len(u)), t, u))
  u, i, t = u[order], i[order], t[order]
  counts = np.bincount(u, minlength=num_users)
  indptr = np.concatenate([[0], np.cumsum(counts)])
  if sp is None:
    splits = chronological_split(counts, s.train_fraction, s.valid_fraction)
  else:
    splits = sp[order].astype(np.int8)
  for split in (raw_lib.TRAIN, raw_lib.VALID, raw_lib.TEST):
    if not (splits == split).any():  # nothing to select or report on: refused, not skipped
      how = (f"the source's split labels, {stats['dropped_interactions']} interactions of dropped "
             'items removed' if sp is not None else
             f'dataset.train_fraction={s.train_fraction}, dataset.valid_fraction={s.valid_fraction} '
             f'and at most {counts.max()} interactions per user')
      raise DataError(f'the {raw_lib.SPLIT_NAMES[split]} split is empty after preparation '
                      f'(with {how}); each split is needed: train to fit, valid to pick '
                      'the epoch, test to report')

  is_train = splits == raw_lib.TRAIN
  train_counts = np.bincount(i[is_train], minlength=num_items).astype(np.int64)
  cold = train_counts <= s.cold_item_max_train_interactions
  # The paper's cold/warm partition is of users (DESIGN 3.3).
  user_cold = np.bincount(u[is_train], minlength=num_users) <= s.cold_max_train_interactions

  vocab, rare = build_vocab([raw.item_elements[r] for r in item_raw], s.min_element_count)
  index = {n: k for k, n in enumerate(vocab)}
  item_elements, truncated = [], 0
  for r in item_raw:
    ids, seen = [], set()
    for n in raw.item_elements[r]:
      if n in index and n not in seen:
        ids.append(index[n])
        seen.add(n)
    truncated += len(ids) > s.max_elements
    item_elements.append(np.asarray(ids[:s.max_elements], np.int32))

  pos = complement.Csr(u, i, num_users, num_items)
  negatives = evaluation_negatives(pos, s.seed, s.repeats, s.num_negatives)

  user_test_cold = np.zeros(num_users, bool)
  test = splits == raw_lib.TEST
  user_test_cold[u[test & cold[i]]] = True
  n = len(u)
  stats.update(
      users=int(num_users), items=int(num_items), interactions=int(n),
      elements=len(vocab) - 1, sparsity=float(1.0 - n / (num_users * num_items)),
      train=int((splits == raw_lib.TRAIN).sum()), valid=int((splits == raw_lib.VALID).sum()),
      test=int(test.sum()), cold_users=int(user_cold.sum()), warm_users=int((~user_cold).sum()),
      cold_user_share=float(user_cold.mean()),
      cold_items=int(cold.sum()), warm_items=int((~cold).sum()),
      dropped_items=len(dropped), test_users_with_cold_positives=int(user_test_cold.sum()),
      rare_elements_removed=int(rare), items_with_truncated_elements=int(truncated),
      items_without_elements=int(sum(len(e) == 0 for e in item_elements)))
  return Prepared(
      item_keys=[str(raw.item_keys[r]) for r in item_raw], item_raw=item_raw,
      item_elements=item_elements, vocab=vocab, train_counts=train_counts, cold=cold,
      user_keys=[str(raw.user_keys[k]) for k in users_present], user_indptr=indptr,
      user_items=i.astype(np.int32), user_times=t.astype(np.float64), user_splits=splits,
      user_cold=user_cold, negatives=negatives, dropped=dropped, stats=stats)
