"""Untrained rankers under the paper's evaluation protocol: what a dataset allows.

  python -m experiments.reference_rankers --config=configs/movielens.py --workdir=runs/movielens

Scores the test candidates with
- random: uniform scores;
- popularity: training interaction counts;
- annotations, features: cosine between the item's multi-hot elements (or its
  feature vector, on feature datasets) and the mean of the user's training
  items' vectors;
and writes reference_rankers.md / .csv with R@10 and NDCG@10 for Cold / Warm /
All, Table II's layout. Nothing here is fitted, so the table shows how far
popularity or content alone gets on a dataset, next to the learned models.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from cierec_jax import evaluate as eval_lib
from cierec_jax.data import load
from cierec_jax.data import raw as raw_lib
from experiments import grid

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs', 'Where the table is written.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['valid', 'test'], 'Evaluated split.')


def _normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _profiles(data, item_vectors):
  """[U, F] sum of each user's training items' vectors."""
  users, items = data.split(raw_lib.TRAIN)
  out = np.zeros((data.num_users, item_vectors.shape[1]), np.float32)
  np.add.at(out, users, item_vectors[items])
  return out


def rankers(data, seed: int = 0) -> dict:
  """{name: score(users [B]) -> [B, I] float32} for the rankers the dataset allows."""
  rng = np.random.default_rng(seed)
  noise = rng.random((data.num_users, data.num_items), np.float32)
  counts = data.train_counts.astype(np.float32)
  out = {'random': lambda u: noise[u], 'popularity': lambda u: np.broadcast_to(counts, (len(u), len(counts)))}
  if data.has_annotations:
    elements = np.zeros((data.num_items, data.num_elements), np.float32)
    rows = np.repeat(np.arange(data.num_items), data.item_elements.shape[1])
    elements[rows, data.item_elements.reshape(-1)] = 1.0
    elements[:, 0] = 0.0  # padding
    out['annotations'] = _content_cosine(data, elements)
  if data.items.modality == raw_lib.FEATURES:
    out['features'] = _content_cosine(data, data.items.content(np.arange(data.num_items)).reshape(data.num_items, -1))
  return out


def _content_cosine(data, item_vectors):
  """Cosine between each item's vector and the mean of the user's training items' vectors."""
  items = _normalize(item_vectors)
  taste = _normalize(_profiles(data, items))
  return lambda u: taste[u] @ items.T


def evaluate_scores(score, data, split: str, ks=(10, 20), batch_size: int = 256) -> dict:
  """Evaluates score(users [B]) -> [B, I] with the fixed candidates; the
  Evaluator's result layout ({subset: {metric@K: {mean, std}}})."""
  c = eval_lib.split_candidates(data, eval_lib.SPLITS[split])
  acc = {'recall': [], 'ndcg': [], 'num_pos': []}
  for a in range(0, len(c.users), batch_size):
    sl = slice(a, a + batch_size)
    s = np.asarray(score(c.users[sl]), np.float32)
    rows = np.arange(s.shape[0])
    out = eval_lib.candidate_metrics(s[rows[:, None], c.pos[sl]], s[rows[:, None, None], c.negatives[sl]],
                                     c.pos_mask[sl], c.pos_cold[sl], c.user_cold[sl], tuple(ks))
    for key in acc:
      acc[key].append(np.asarray(out[key]))
  return eval_lib.aggregate(*(np.concatenate(acc[k]) for k in ('recall', 'ndcg', 'num_pos')), tuple(ks))


def main(_):
  data = load.load(_CONFIG.value)
  ks = tuple(int(k) for k in _CONFIG.value.eval.ks)
  rows = []
  for name, score in rankers(data).items():
    r = evaluate_scores(score, data, _SPLIT.value, ks)
    rows.append((name, [f"{r[s][f'{m}@10']['mean']:.4f} ± {r[s][f'{m}@10']['std']:.4f}"
                        for s in ('cold', 'warm', 'all') for m in ('recall', 'ndcg')]))
  header = ['ranker'] + [f'{s} {m}' for s in ('Cold', 'Warm', 'All') for m in ('R@10', 'NDCG@10')]
  os.makedirs(_WORKDIR.value, exist_ok=True)
  print(grid.write_table(rows, header, os.path.join(_WORKDIR.value, 'reference_rankers')))


if __name__ == '__main__':
  app.run(main)
