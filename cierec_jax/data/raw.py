"""The parsed form every raw reader returns, before the shared preparation rules."""

import dataclasses
from typing import Callable, Sequence

import numpy as np

IMAGE = 'image'
FEATURES = 'features'

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ('train', 'valid', 'test')


@dataclasses.dataclass
class RawData:
  """Items, users and interactions as read from the source files.

  Attributes:
    modality: IMAGE or FEATURES.
    item_keys: [I_raw] the source's item ids.
    item_elements: [I_raw] annotation element names per item, in source order.
    missing_source: raw item index -> why it has no image/feature (dropped).
    load_source: raw item index -> uint8 [H, W, 3] image or float32 [F] vector.
    source_shape: shape of what load_source returns.
    user_keys: [U_raw] the source's user ids.
    inter_user, inter_item: [N] int64 raw indices.
    inter_time: [N] float64 timestamps (seconds).
    inter_split: [N] int8 official split labels, or None to split by time.
    stats: reader-specific counts reported next to the shared statistics.
  """
  modality: str
  item_keys: Sequence[str]
  item_elements: Sequence[Sequence[str]]
  missing_source: dict[int, str]
  load_source: Callable[[int], np.ndarray]
  source_shape: tuple[int, ...]
  user_keys: Sequence[str]
  inter_user: np.ndarray
  inter_item: np.ndarray
  inter_time: np.ndarray
  inter_split: np.ndarray | None = None
  stats: dict = dataclasses.field(default_factory=dict)
