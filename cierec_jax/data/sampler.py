"""The BPR training sampler (DESIGN 3.5).

Each epoch visits every training interaction (u, i) once, in an order shuffled
by (seed, epoch), and pairs it with one negative j drawn uniformly from the
items u has no training interaction with. The whole epoch is drawn at once, so
every process sees the same epoch and takes its own slice of each global batch;
the slices of all processes partition the epoch. The last batch is filled up
with weight-0 rows, so shapes stay fixed and no interaction is dropped.
A train call runs several steps (`train.steps_per_call`): `calls` stacks their
batches with one slice of the epoch's arrays.
"""

import math
import threading
from typing import Callable, Iterator

import numpy as np

from cierec_jax.data import complement
from cierec_jax.data import dataset as dataset_lib
from cierec_jax.data import images
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
    self._grouped = bool(np.all(np.diff(self.users) >= 0))  # by user: see Csr.sample_free
    self.positives = complement.Csr(self.users, self.items, num_users, num_items)
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.process_index = process_index
    self.steps_per_epoch = math.ceil(len(self.users) / global_batch_size)
    self._current = None  # (epoch, triples): the last epoch asked for
    self._ahead = None  # (epoch, thread, result holder): the next epoch, drawn in the background

  def examples(self, step: int) -> int:
    """Real (weight-1) rows in global batch `step` of an epoch, over all processes."""
    return min(self.global_batch_size, len(self.users) - step * self.global_batch_size)

  def epoch_triples(self, epoch: int) -> dict[str, np.ndarray]:
    """The whole epoch for all processes: user/pos/neg [S * B] int32, weight [S * B] float32.

    Epoch e + 1 is drawn in a background thread as soon as epoch e is asked
    for, so an epoch's first call does not wait for the draw (on MovieLens
    MF the draw is ~15% of an epoch's training time). The epoch asked for
    last is kept: training asks for epoch 0 three times as it starts (the
    example batch, the divergence probe, the first call).
    """
    if self._current is not None and self._current[0] == epoch:
      return self._current[1]
    ahead, self._ahead = self._ahead, None
    if ahead is not None and ahead[0] == epoch:
      ahead[1].join()
      triples = ahead[2][0] if ahead[2] else self.draw(epoch)  # a failed draw raises here
    else:
      triples = self.draw(epoch)
    holder = []
    thread = threading.Thread(target=lambda: holder.append(self.draw(epoch + 1)), daemon=True)
    thread.start()
    self._ahead = (epoch + 1, thread, holder)
    self._current = (epoch, triples)
    return triples

  def draw(self, epoch: int) -> dict[str, np.ndarray]:
    """epoch_triples, computed now: a function of (seed, epoch) only."""
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(len(self.users))
    users, pos = self.users[order], self.items[order]
    neg = self.positives.sample_free(rng, users, order if self._grouped else None)
    n, total = len(order), self.steps_per_epoch * self.global_batch_size
    pad = np.arange(total - n) % n  # weight-0 filler rows, real triples
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(total - n, np.float32)])
    cat = lambda a: np.concatenate([a, a[pad]]).astype(np.int32)
    return {'user': cat(users), 'pos': cat(pos), 'neg': cat(neg), 'weight': weight}

  def batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's batches of `epoch`, from `start_step` (for resuming)."""
    for _, stacked in self.calls(epoch, start_step):
      yield {k: v[0] for k, v in stacked.items()}

  def calls(self, epoch: int, start_step: int = 0, steps_per_call: int = 1,
            ends_call: Callable[[int], bool] = lambda step: False
            ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """This process's batches of `epoch` from `start_step`, stacked per call.

    Yields (first step in the epoch, {name: [n, local batch]}) with n at most
    `steps_per_call`; a call also ends after the epoch's last step and after
    each global step count s (epoch * steps_per_epoch + step) with ends_call(s),
    so that a checkpoint or a halt there sees exactly that step's state.
    """
    triples = self.epoch_triples(epoch)
    g, b, spe = self.global_batch_size, self.local_batch_size, self.steps_per_epoch
    mine = slice(self.process_index * b, (self.process_index + 1) * b)
    lo = start_step
    while lo < spe:
      hi = lo + 1
      while hi < min(lo + steps_per_call, spe) and not ends_call(epoch * spe + hi):
        hi += 1
      yield lo, {k: np.ascontiguousarray(v[lo * g:hi * g].reshape(hi - lo, g)[:, mine])
                 for k, v in triples.items()}
      lo = hi


def sampler_for(data: dataset_lib.RecData, global_batch_size: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> BPRSampler:
  users, items = data.split(raw_lib.TRAIN)
  return BPRSampler(users, items, data.num_users, data.num_items, global_batch_size, seed,
                    process_index, process_count)


def with_item_inputs(batch: dict, data: dataset_lib.RecData, annotations: bool = True,
                     raw: bool = False) -> dict:
  """Adds what the model sees of the positive and negative items.

  pos_content/neg_content: [B, H, W, 3] normalised float32 images or [B, F]
  features (raw: as stored, uint8 images, for `device_item_inputs` to finish
  on the device); pos_elements/neg_elements: [B, L] int32 (0-padded);
  pos_lengths/neg_lengths: [B] int32 (zero when annotations are withheld).
  The ids may carry leading axes ([n, B] stacked calls): so do the outputs.
  """
  lengths = data.item_lengths if annotations else np.zeros_like(data.item_lengths)
  return _gather(batch, data.items.raw if raw else data.items.content, data.item_elements, lengths)


def item_tables(data: dataset_lib.RecData) -> dict[str, np.ndarray]:
  """Every item's model inputs, indexed by item id, for `device_item_inputs`
  (needs the preloaded store): content [I, H, W, 3] uint8 or [I, F] float32,
  elements [I, L] int32, lengths [I] int32."""
  if data.items.array is None:
    raise ValueError('item tables need the items in memory (dataset.preload=True)')
  return {'content': data.items.array, 'elements': data.item_elements, 'lengths': data.item_lengths}


def device_item_inputs(batch: dict, tables: dict | None, modality: str) -> dict:
  """`with_item_inputs` inside the train step: gathered from `item_tables` held
  on the device, or (tables=None) finished from a batch that carries its items
  raw (`with_item_inputs(raw=True)`). Images are normalised here, not on the
  host, which sends a quarter of the bytes and no longer limits a GPU: at
  224x224 the host's normalisation capped every host-gathered pipeline near
  1,000 images/s against the step's 8,400 on an H200 (README, Speed)."""
  if tables is None:
    return dict(batch, **{f'{side}_content': dataset_lib.model_content(batch[f'{side}_content'], modality)
                          for side in ('pos', 'neg')})
  content = lambda ids: dataset_lib.model_content(tables['content'][ids], modality)
  return _gather(batch, content, tables['elements'], tables['lengths'])


def _gather(batch: dict, content, elements, lengths) -> dict:
  """content: ids -> model-ready content; elements [I, L], lengths [I]."""
  out = dict(batch)
  for side in ('pos', 'neg'):
    ids = batch[side]
    out[f'{side}_content'] = content(ids)
    out[f'{side}_elements'] = elements[ids]
    out[f'{side}_lengths'] = lengths[ids]
  return out


def device_item_tables(data: dataset_lib.RecData, max_bytes: float) -> dict | None:
  """`item_tables` when the items are preloaded and their tables take at most
  max_bytes (train.device_items_max_mb); None: gather on the host per batch."""
  if data.items.array is None:
    return None
  tables = item_tables(data)
  return tables if sum(v.nbytes for v in tables.values()) <= max_bytes else None
