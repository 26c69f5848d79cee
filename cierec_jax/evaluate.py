"""Sampled-candidate ranking evaluation (DESIGN 6).

Per user and repeat the candidates are the user's positives in the split
(restricted to the subset) plus that repeat's fixed negatives. Subsets:
`all`; `cold` / `warm`, the paper's partition of users (a user's candidates
are all their positives), so All = w * Cold + (1 - w) * Warm exactly, w the
cold users' share of evaluated users; `cold_item` / `warm_item`, the item
partition (a user's cold-item positives, or warm-item positives). Encoder
outputs are computed once per item per evaluation; scores come from the
model's scoring function. Each user's positives are scored once and shared by
the repeats.
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from cierec_jax import metrics as metrics_lib
from cierec_jax import parallel
from cierec_jax import xla_options
from cierec_jax.data import dataset as dataset_lib
from cierec_jax.data import raw as raw_lib

SUBSETS = ('all', 'cold', 'warm', 'cold_item', 'warm_item')
USER_SUBSETS = {'cold': True, 'warm': False}  # subset -> the users' cold flag
SPLITS = {'valid': raw_lib.VALID, 'test': raw_lib.TEST}


@dataclasses.dataclass
class SplitCandidates:
  """users: [n] users with a positive in the split; pos: [n, P] int32 padded;
  pos_mask, pos_cold: [n, P] bool (pos_cold: a cold item); user_cold: [n] bool;
  negatives: [n, R, K] int32."""
  users: np.ndarray
  pos: np.ndarray
  pos_mask: np.ndarray
  pos_cold: np.ndarray
  user_cold: np.ndarray
  negatives: np.ndarray


def split_candidates(data, split: int) -> SplitCandidates:
  users, items = data.split(split)
  present, counts = np.unique(users, return_counts=True)
  width = max(1, int(counts.max()) if len(counts) else 1)
  pos = np.zeros((len(present), width), np.int32)
  mask = np.zeros((len(present), width), bool)
  start = np.searchsorted(users, present)
  for row, (a, n) in enumerate(zip(start, counts)):
    pos[row, :n] = items[a:a + n]
    mask[row, :n] = True
  return SplitCandidates(users=present.astype(np.int32), pos=pos, pos_mask=mask,
                         pos_cold=data.cold[pos] & mask, user_cold=data.user_cold[present],
                         negatives=data.negatives[present])


def subset_masks(pos_mask, pos_cold, user_cold):
  """[S, B, P] which positives each subset (SUBSETS order) keeps.

  pos_mask, pos_cold: [B, P] bool; user_cold: [B] bool."""
  xp = jnp if isinstance(pos_mask, jax.Array) else np
  by_user = {'cold': user_cold[:, None], 'warm': ~user_cold[:, None]}
  by_item = {'all': True, 'cold_item': pos_cold, 'warm_item': ~pos_cold}
  return xp.stack([pos_mask & (by_user[n] if n in by_user else by_item[n]) for n in SUBSETS])


def candidate_metrics(pos_scores, neg_scores, pos_mask, pos_cold, user_cold, ks) -> dict:
  """Each (repeat, subset)'s per-user metrics, as a pure function of scores:
  those of metrics.ranking_metrics on each user's list [subset's positives;
  the repeat's negatives], computed from the positives' ranks.

  pos_scores: [B, P]; neg_scores: [B, R, K]; pos_mask, pos_cold: [B, P] bool;
  user_cold: [B] bool. Returns recall, ndcg: [B, R, S, len(ks)] and num_pos:
  [B, R, S], S in SUBSETS order; a user outside a subset has num_pos 0.
  """
  b, r = neg_scores.shape[:2]
  keep = subset_masks(pos_mask, pos_cold, user_cold)
  ranked = [SUBSETS.index(n) for n in SUBSETS if n not in USER_SUBSETS]
  ranked_keep = keep[jnp.asarray(ranked)]
  recall, ndcg, num = metrics_lib.metrics_from_ranks(
      metrics_lib.positive_ranks(pos_scores, neg_scores, ranked_keep, max(ks)), ranked_keep, ks)
  out = {SUBSETS[s]: (recall[j], ndcg[j], num[j]) for j, s in enumerate(ranked)}
  # A user subset keeps all of a user's positives: its users' 'all' metrics.
  for name, flag in USER_SUBSETS.items():
    rec, nd, n = out['all']
    out[name] = (rec, nd, jnp.where(user_cold == flag, n, 0))
  stack = lambda i, axis: jnp.stack([out[n][i] for n in SUBSETS], axis)
  num_pos = stack(2, 1)  # [B, S]: the same users in every repeat
  return {'recall': stack(0, 2), 'ndcg': stack(1, 2),  # [B, R, S, len(ks)]
          'num_pos': jnp.broadcast_to(num_pos[:, None], (b, r, len(SUBSETS)))}


class Evaluator:
  """Evaluates a model's variables on the valid or test split."""

  def __init__(self, model, data, eval_config, place=None):
    """place: optional function putting a dict of per-user arrays on devices
    (e.g. sharded over a mesh); by default arrays go to the default device."""
    self.model = model
    self.data = data
    self.ks = tuple(int(k) for k in eval_config.ks)
    self.batch_size = int(eval_config.batch_size)
    self.encode_batch = int(eval_config.encode_batch_size)
    self.annotations = bool(eval_config.annotations)
    self.place = place or (lambda batch: batch)
    self.splits = {name: split_candidates(data, s) for name, s in SPLITS.items()}
    # Items go to the device as stored (uint8 images) and are normalised there.
    self._encode = xla_options.jit(lambda v, x: model.apply(
        v, dataset_lib.model_content(x, data.items.modality), False, method='encode'))
    self._table = xla_options.jit(lambda v, e, el, ln: model.apply(v, e, el, ln, method='item_table'))
    self._score = xla_options.jit(self._score_batch)
    self.score_all_items = None  # None: chosen per split by shapes (_score_batch); tests force a path
    self._compiled = xla_options.AheadOfTime()

  @property
  def compile_seconds(self) -> float:
    return self._compiled.seconds

  def _run(self, fn, *args):
    """Calls jitted fn ahead of time, so that compilation is timed apart from evaluation."""
    return self._compiled(fn, args)(*args)

  def item_table(self, variables, annotations: bool = True):
    """Encodes every item once (inference mode) and builds the per-item table;
    annotations=False withholds every item's annotation (lengths 0)."""
    e = None
    if self.model.spec.encoder is not None:
      n = self.data.num_items
      chunks = []
      for a in range(0, n, self.encode_batch):
        ids = np.arange(a, min(n, a + self.encode_batch))
        pad = self.encode_batch - len(ids)
        x = self.data.items.raw(np.concatenate([ids, np.zeros(pad, ids.dtype)]))
        chunks.append(self._run(self._encode, variables, x)[:len(ids)])
      e = jnp.concatenate(chunks)
    lengths = self.data.item_lengths if annotations else np.zeros_like(self.data.item_lengths)
    return self._run(self._table, variables, e, jnp.asarray(self.data.item_elements),
                     jnp.asarray(lengths))

  def _score_batch(self, variables, table, batch):
    """Scores [B, P + R*K] candidates and the per-user metrics of every
    (repeat, subset): recall, ndcg [B, R, S, len(ks)], num_pos [B, R, S]."""
    b, p = batch['pos'].shape
    r, k = batch['negatives'].shape[1:]
    cands = jnp.concatenate([batch['pos'], batch['negatives'].reshape(b, r * k)], axis=1)
    score_all = self.score_all_items
    if score_all is None:
      # Scoring every item once per user costs fewer pairs than scoring each
      # repeat's candidates when I <= P + R*K; the scores are the same.
      score_all = self.data.num_items <= p + r * k
    if score_all:
      if hasattr(self.model, 'score_all_items'):  # without gathering the table per user
        scores = self.model.apply(variables, batch['users'], table, method='score_all_items')
      else:
        every = jnp.broadcast_to(jnp.arange(self.data.num_items, dtype=cands.dtype), (b, self.data.num_items))
        scores = self.model.apply(variables, batch['users'], every, table, method='score_candidates')
      scores = jnp.take_along_axis(scores, cands, axis=1)
    else:
      scores = self.model.apply(variables, batch['users'], cands, table, method='score_candidates')
    out = candidate_metrics(scores[:, :p], scores[:, p:].reshape(b, r, k), batch['pos_mask'],
                            batch['pos_cold'], batch['user_cold'], self.ks)
    return dict(out, scores=scores)

  def __call__(self, variables, split: str, dump_dir: str | None = None,
               annotations: bool | None = None) -> dict:
    """Returns {subset: {'recall@K': {'mean', 'std'}, 'ndcg@K': ...}, 'users': n} and
    throughput; writes per-(subset, repeat) npz files under dump_dir when given.

    annotations: whether scoring reads the items' annotations (default:
    eval.annotations); False is the privileged-information setting.

    In a multi-process run each process scores its share of the users on its
    own devices (`parallel.process_rows`) and every process gets all users'
    metrics; process 0 writes the dump.
    """
    start, compile_before = time.perf_counter(), self.compile_seconds
    variables = parallel.local_replica(variables)
    table = self.item_table(variables, self.annotations if annotations is None else annotations)
    c = self.splits[split]
    n, bs = len(c.users), self.batch_size
    rows = parallel.process_rows(n)  # this process's users
    fields = {'users': c.users, 'pos': c.pos, 'pos_mask': c.pos_mask, 'pos_cold': c.pos_cold,
              'user_cold': c.user_cold, 'negatives': c.negatives}
    acc = {'recall': [], 'ndcg': [], 'num_pos': [], 'scores': []}
    for a in range(0, len(rows), bs):
      idx = rows[np.arange(a, a + bs) % len(rows)]  # the last batch wraps; extra rows are cut
      out = self._run(self._score, variables, table, self.place({k: v[idx] for k, v in fields.items()}))
      m = min(bs, len(rows) - a)
      for key in acc:
        if key != 'scores' or dump_dir:
          acc[key].append(np.asarray(out[key])[:m])
    recall, ndcg, num = (parallel.gather_rows(np.concatenate(acc[k]), n)
                         for k in ('recall', 'ndcg', 'num_pos'))
    results = aggregate(recall, ndcg, num, self.ks)
    results['users'] = int(n)
    results['compile_seconds'] = self.compile_seconds - compile_before
    results['seconds'] = time.perf_counter() - start - results['compile_seconds']
    results['users_per_second'] = n / max(results['seconds'], 1e-9)
    if dump_dir:
      scores = parallel.gather_rows(np.concatenate(acc['scores']), n)
      if parallel.is_writer():
        dump(os.path.join(dump_dir, split), c, scores)
    return results


def aggregate(recall, ndcg, num_pos, ks) -> dict:
  """Means over users with a positive in the subset, then mean/std over repeats.

  recall, ndcg: [n, R, S, len(ks)]; num_pos: [n, R, S]. A subset without users
  (e.g. no cold user has a valid interaction) has mean and std None.
  """
  out = {}
  for s, name in enumerate(SUBSETS):
    has = num_pos[:, :, s] > 0  # [n, R]; the same users in every repeat
    entry = {'users': int(has[:, 0].sum())}
    for metric, values in (('recall', recall), ('ndcg', ndcg)):
      for j, k in enumerate(ks):
        per_repeat = [values[has[:, r], r, s, j].mean() for r in range(values.shape[1]) if has[:, r].any()]
        entry[f'{metric}@{k}'] = ({'mean': float(np.mean(per_repeat)), 'std': float(np.std(per_repeat))}
                                  if per_repeat else {'mean': None, 'std': None})
    out[name] = entry
  return out


def dump(folder: str, c: SplitCandidates, scores: np.ndarray):
  """One npz per (subset, repeat): users [n], candidates/scores/labels/valid [n, P + K]."""
  os.makedirs(folder, exist_ok=True)
  n, p = c.pos.shape
  r, k = c.negatives.shape[1:]
  keep = subset_masks(c.pos_mask, c.pos_cold, c.user_cold)
  for s, name in enumerate(SUBSETS):
    for rep in range(r):
      cands = np.concatenate([c.pos, c.negatives[:, rep]], axis=1)
      sc = np.concatenate([scores[:, :p], scores[:, p + rep * k:p + (rep + 1) * k]], axis=1)
      labels = np.concatenate([np.ones((n, p), bool), np.zeros((n, k), bool)], axis=1)
      valid = np.concatenate([keep[s], np.ones((n, k), bool)], axis=1)
      np.savez_compressed(os.path.join(folder, f'{name}_repeat{rep}.npz'), users=c.users,
                          candidates=cands, scores=sc, labels=labels, valid=valid)
