"""The TFDS builder shared by every dataset: two tables per prepared dataset.

Like TFDS's own `movielens/*-ratings` and `*-movies`, a prepared dataset is two
builder configs of one builder: `items-<fp>` (source modality, annotation,
training count, cold flag) and `users-<fp>` (chronological interactions with
split labels, the user's cold flag and the fixed evaluation negatives). `<fp>` fingerprints every
setting that changes the content, so a different seed never reuses old data.
TFDS writes each config into an `incomplete.*` folder and renames it when
complete, so an interrupted preparation is never read as finished.
"""

import abc
import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from cierec_jax.data import images
from cierec_jax.data import prepare as prepare_lib
from cierec_jax.data import raw as raw_lib

VERSION = '1.1.0'  # 1.1.0: users carry their cold flag
ITEMS, USERS = 'items', 'users'

# Prepared tables of the current process, so the second table reuses the parse.
_PREPARED_CACHE: dict = {}


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """A table's info that never asks TFDS's GCS bucket about it: none of these
  tables is there, and the asking leaves an empty temporary folder for every
  table not yet prepared (`mkdtemp('tfds')`, TFDS 4.9)."""

  def initialize_from_bucket(self) -> None:
    pass


@dataclasses.dataclass(eq=False)
class RecConfig(tfds.core.BuilderConfig):
  table: str = ITEMS


def fingerprint(settings: dict) -> str:
  blob = json.dumps({'version': VERSION, **settings}, sort_keys=True, default=list)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]


class RecBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Writes one table of a prepared recommendation dataset.

  Subclasses implement `read_raw(settings, manual_dir) -> RawData`.
  """
  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, settings: dict, prep: prepare_lib.PrepSettings,
               manual_dir: str | None = None, **kwargs):
    self._settings = settings
    self._prep = prep
    self._manual = manual_dir
    super().__init__(**kwargs)

  @abc.abstractmethod
  def read_raw(self, settings: dict, manual_dir: str | None) -> raw_lib.RawData:
    """Parses the raw source into RawData."""

  def prepared(self) -> tuple[raw_lib.RawData, prepare_lib.Prepared]:
    key = (self.name, self.builder_config.name.split('-', 1)[1])
    if key not in _PREPARED_CACHE:
      _PREPARED_CACHE.clear()
      raw = self.read_raw(self._settings, self._manual)
      _PREPARED_CACHE[key] = (raw, prepare_lib.prepare(raw, self._prep))
    return _PREPARED_CACHE[key]

  def _info(self):
    raw, prep = self.prepared()
    if self.builder_config.table == ITEMS:
      source = (tfds.features.Image(shape=raw.source_shape, encoding_format=self._image_format())
                if raw.modality == raw_lib.IMAGE else
                tfds.features.Tensor(shape=raw.source_shape, dtype=np.float32))
      features = {'item': np.int64, 'key': tfds.features.Text(), raw.modality: source,
                  'elements': tfds.features.Tensor(shape=(None,), dtype=np.int32),
                  'train_count': np.int64, 'cold': np.bool_}
      metadata = {'modality': raw.modality, 'source_shape': list(raw.source_shape),
                  'vocab': prep.vocab, 'stats': prep.stats, 'settings': self._settings,
                  'dropped_items': [list(d) for d in prep.dropped]}
    else:
      features = {'user': np.int64, 'key': tfds.features.Text(),
                  'items': tfds.features.Tensor(shape=(None,), dtype=np.int32),
                  'timestamps': tfds.features.Tensor(shape=(None,), dtype=np.float64),
                  'splits': tfds.features.Tensor(shape=(None,), dtype=np.int8),
                  'cold': np.bool_,
                  'negatives': tfds.features.Tensor(shape=prep.negatives.shape[1:], dtype=np.int32)}
      metadata = {'stats': prep.stats}
    return _LocalDatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(metadata),
        disable_shuffling=True)  # record k is item k / user k

  def _image_format(self) -> str:
    return 'png'

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    raw, prep = self.prepared()
    if self.builder_config.table == ITEMS:
      fmt = self._image_format()
      for k, r in enumerate(prep.item_raw):
        source = raw.load_source(int(r))
        if raw.modality == raw_lib.IMAGE:
          source = images.encode(source, fmt)
        yield k, {'item': k, 'key': prep.item_keys[k], raw.modality: source,
                  'elements': prep.item_elements[k], 'train_count': int(prep.train_counts[k]),
                  'cold': bool(prep.cold[k])}
    else:
      for u in range(len(prep.user_keys)):
        a, b = prep.user_indptr[u], prep.user_indptr[u + 1]
        yield u, {'user': u, 'key': prep.user_keys[u], 'items': prep.user_items[a:b],
                  'timestamps': prep.user_times[a:b], 'splits': prep.user_splits[a:b],
                  'cold': bool(prep.user_cold[u]), 'negatives': prep.negatives[u]}


def table_dir(data_dir: str, builder_name: str, table: str, fp: str) -> str:
  return os.path.join(data_dir, builder_name, f'{table}-{fp}', VERSION)
