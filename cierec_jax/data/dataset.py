"""A prepared dataset in memory: interactions as arrays, items behind a store."""

import dataclasses
from concurrent import futures

import numpy as np

from cierec_jax.data import complement
from cierec_jax.data import images
from cierec_jax.data import raw as raw_lib


class ItemStore:
  """Each item's source modality, ready for the model.

  Holds uint8 images or float32 features in memory when `preload`; otherwise
  decodes the requested records from the ArrayRecord source on each call.
  `content` normalises images on the host; training and evaluation send
  them raw (uint8) and normalise on the device (`sampler.device_item_inputs`).
  """

  def __init__(self, source, modality: str, num_items: int, preload: bool, threads: int = 8):
    self.modality = modality
    self._source = source
    self._pool = None if preload else futures.ThreadPoolExecutor(threads)
    self.array = self._read(np.arange(num_items)) if preload else None

  @classmethod
  def from_array(cls, array: np.ndarray, modality: str) -> 'ItemStore':
    """A store over an in-memory [I, ...] array, e.g. pre-extracted features [I, D] float32."""
    store = cls.__new__(cls)
    store.modality, store._source, store._pool, store.array = modality, None, None, array
    return store

  def _read(self, ids: np.ndarray) -> np.ndarray:
    getter = (lambda i: self._source[int(i)][self.modality])
    records = list(self._pool.map(getter, ids)) if self._pool else [getter(i) for i in ids]
    return np.stack(records)

  def raw(self, ids: np.ndarray) -> np.ndarray:
    """ids: [...] int -> uint8 [..., H, W, 3] images or float32 [..., F] features."""
    ids = np.asarray(ids)
    flat = self.array[ids.reshape(-1)] if self.array is not None else self._read(ids.reshape(-1))
    return flat.reshape(ids.shape + flat.shape[1:])

  def content(self, ids: np.ndarray) -> np.ndarray:
    """What the encoder consumes: normalised float32 images, or float32 features."""
    return model_content(self.raw(ids), self.modality)


def model_content(raw, modality: str):
  """uint8 images -> normalised float32; features -> float32. numpy or jax arrays."""
  return images.normalize(raw) if modality == raw_lib.IMAGE else raw.astype(np.float32)


@dataclasses.dataclass
class RecData:
  """A prepared dataset. Interactions are grouped by user in time order.

  user_indptr: [U + 1]; user_items [N] int32; user_times [N] float64;
  user_splits [N] int8 (raw.TRAIN / VALID / TEST).
  item_elements: [I, L] int32 padded with 0; item_lengths: [I] int32.
  negatives: [U, R, K] int32. train_counts: [I]; cold: [I] bool, the cold
  items; user_cold: [U] bool, the cold users (the paper's partition).
  modality is the source modality; `items` holds what the model reads: the
  source, or on an image dataset the items' pre-extracted features
  (`items.modality == 'features'`, see cierec_jax.features.for_model).
  """
  name: str
  modality: str
  source_shape: tuple
  vocab: list
  user_indptr: np.ndarray
  user_items: np.ndarray
  user_times: np.ndarray
  user_splits: np.ndarray
  item_elements: np.ndarray
  item_lengths: np.ndarray
  train_counts: np.ndarray
  cold: np.ndarray
  user_cold: np.ndarray
  negatives: np.ndarray
  stats: dict
  items: ItemStore
  path: str = ''

  @property
  def num_users(self) -> int:
    return len(self.user_indptr) - 1

  @property
  def num_items(self) -> int:
    return len(self.cold)

  @property
  def num_elements(self) -> int:
    """Vocabulary size including the padding id 0."""
    return len(self.vocab)

  @property
  def has_annotations(self) -> bool:
    return bool(self.item_lengths.sum() > 0)

  def interaction_users(self) -> np.ndarray:
    """[N] int64 user of each interaction."""
    return np.repeat(np.arange(self.num_users), np.diff(self.user_indptr))

  def split(self, split: int) -> tuple[np.ndarray, np.ndarray]:
    """(users [n], items [n]) of one split, grouped by user in time order."""
    sel = self.user_splits == split
    return self.interaction_users()[sel], self.user_items[sel].astype(np.int64)

  def positives(self, split: int | None = None) -> complement.Csr:
    """Per-user item sets of one split (None: all splits)."""
    if split is None:
      users, items = self.interaction_users(), self.user_items.astype(np.int64)
    else:
      users, items = self.split(split)
    return complement.Csr(users, items, self.num_users, self.num_items)
