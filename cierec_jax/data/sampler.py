"""The BPR training sampler (DESIGN 3.5).

Each epoch visits every training interaction (u, i) once, in an order shuffled
by (seed, epoch), and pairs it with one negative j drawn uniformly from the
items u has no training interaction with. The whole epoch is drawn at once, so
every process sees the same epoch and takes its own slice of each global batch;
the slices of all processes partition the epoch. The last batch is filled up
with weight-0 rows, so shapes stay fixed and no interaction is dropped.
"""

import math
from typing import Iterator

import numpy as np

from cierec_jax.data import complement
from cierec_jax.data import dataset as dataset_lib
from cierec_jax.data import raw as raw_lib


class BPRSampler:
  """Triples (user, positive, negative) for BPR, by (seed, epoch, step)."""

  def __init__(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
               global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1):
    """users, items: [N] the training interactions."""
    if global_batch_size % process_count:
      raise ValueError(f'train.batch_size={global_batch_size} is not divisible by the '
                       f'{process_count} processes')
    if not len(users):
      raise ValueError('no training interactions to sample from')
    self.users = users.astype(np.int64)
    self.items = items.astype(np.int64)
    self.positives = complement.Csr(self.users, self.items, num_users, num_items)
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.process_index = process_index
    self.steps_per_epoch = math.ceil(len(self.users) / global_batch_size)

  def examples(self, step: int) -> int:
    """Real (weight-1) rows in global batch `step` of an epoch, over all processes."""
    return min(self.global_batch_size, len(self.users) - step * self.global_batch_size)

  def epoch_triples(self, epoch: int) -> dict[str, np.ndarray]:
    """The whole epoch for all processes: user/pos/neg [S * B] int32, weight [S * B] float32."""
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(len(self.users))
    users, pos = self.users[order], self.items[order]
    neg = self.positives.sample_free(rng, users)
    n, total = len(order), self.steps_per_epoch * self.global_batch_size
    pad = np.arange(total - n) % n  # weight-0 filler rows, real triples
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(total - n, np.float32)])
    cat = lambda a: np.concatenate([a, a[pad]]).astype(np.int32)
    return {'user': cat(users), 'pos': cat(pos), 'neg': cat(neg), 'weight': weight}

  def batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's batches of `epoch`, from `start_step` (for resuming)."""
    triples = self.epoch_triples(epoch)
    g, b = self.global_batch_size, self.local_batch_size
    for step in range(start_step, self.steps_per_epoch):
      lo = step * g + self.process_index * b
      yield {k: v[lo:lo + b] for k, v in triples.items()}


def sampler_for(data: dataset_lib.RecData, global_batch_size: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> BPRSampler:
  users, items = data.split(raw_lib.TRAIN)
  return BPRSampler(users, items, data.num_users, data.num_items, global_batch_size, seed,
                    process_index, process_count)


def with_item_inputs(batch: dict, data: dataset_lib.RecData, annotations: bool = True) -> dict:
  """Adds what the model sees of the positive and negative items.

  pos_content/neg_content: [B, H, W, 3] normalised float32 images or [B, F]
  features; pos_elements/neg_elements: [B, L] int32 (0-padded);
  pos_lengths/neg_lengths: [B] int32 (zero when annotations are withheld).
  """
  out = dict(batch)
  for side in ('pos', 'neg'):
    ids = batch[side]
    out[f'{side}_content'] = data.items.content(ids)
    out[f'{side}_elements'] = data.item_elements[ids]
    out[f'{side}_lengths'] = data.item_lengths[ids] if annotations else np.zeros(len(ids), np.int32)
  return out
