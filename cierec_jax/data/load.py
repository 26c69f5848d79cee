"""Prepare a dataset once (TFDS, ArrayRecord) and load it for training."""

import json
import os
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds

from cierec_jax import workdir_lock
from cierec_jax.data import builder
from cierec_jax.data import dataset as dataset_lib
from cierec_jax.data import prepare as prepare_lib
from cierec_jax.data.errors import DataError

# Fields of config.dataset that locate files rather than define the content.
_LOCATION_FIELDS = ('name', 'data_dir', 'manual_dir', 'preload')


def builders() -> dict:
  from cierec_jax.data import allrecipes, amazon_cds, movielens, synthetic  # pylint: disable=g-import-not-at-top
  return {'synthetic': synthetic.CierecSynthetic, 'movielens100k': movielens.CierecMovielens100k,
          'amazon_cds': amazon_cds.CierecAmazonCds, 'allrecipes': allrecipes.CierecAllrecipes}


def content_settings(config) -> dict:
  """Every setting that changes the prepared content (and hence the fingerprint)."""
  ds = config.dataset.to_dict()
  settings = {k: v for k, v in ds.items() if k not in _LOCATION_FIELDS}
  settings['num_negatives'] = int(config.eval.num_negatives)
  settings['repeats'] = int(config.eval.repeats)
  return settings


def prep_settings(config) -> prepare_lib.PrepSettings:
  ds = config.dataset
  return prepare_lib.PrepSettings(
      seed=int(ds.seed), train_fraction=float(ds.train_fraction),
      valid_fraction=float(ds.valid_fraction),
      cold_max_train_interactions=int(ds.cold_max_train_interactions),
      cold_item_max_train_interactions=int(ds.cold_item_max_train_interactions),
      min_element_count=int(ds.min_element_count), max_elements=int(ds.max_elements),
      num_negatives=int(config.eval.num_negatives), repeats=int(config.eval.repeats))


def _paths(config):
  name = config.dataset.name
  table = builders()
  if name not in table:
    raise DataError(f'config.dataset.name={name!r}: expected one of {sorted(table)}')
  cls = table[name]
  fp = builder.fingerprint(content_settings(config))
  data_dir = os.path.expanduser(config.dataset.data_dir)
  return cls, fp, data_dir, {t: builder.table_dir(data_dir, cls.name, t, fp)
                             for t in (builder.ITEMS, builder.USERS)}


def _complete(path: str) -> bool:
  return os.path.exists(os.path.join(path, 'dataset_info.json'))


def is_prepared(config) -> bool:
  """Whether both tables of the config's dataset are complete in dataset.data_dir."""
  return all(_complete(p) for p in _paths(config)[3].values())


def remove_incomplete(table_path: str):
  """Deletes what a killed preparation of this table left (TFDS writes into
  `incomplete.<random>_<version>` next to the table and renames it when done).
  Called under the preparation lock, so none of it is being written."""
  parent = os.path.dirname(table_path)
  if not os.path.isdir(parent):
    return
  for entry in os.listdir(parent):
    if entry.startswith('incomplete.'):
      print(f'removing {os.path.join(parent, entry)}, left by an interrupted preparation',
            file=sys.stderr)
      shutil.rmtree(os.path.join(parent, entry))


def prepare(config) -> dict:
  """Builds the dataset's tables unless already complete. Returns their paths."""
  cls, fp, data_dir, paths = _paths(config)
  manual = config.dataset.get('manual_dir') or None
  manual = os.path.expanduser(manual) if manual else None
  if not all(_complete(p) for p in paths.values()):
    # One preparer per dataset: a second one waits, then finds the tables complete.
    with workdir_lock.held(os.path.join(data_dir, cls.name), f'prepare-{fp}.lock',
                           f'preparation of {cls.name} {fp}', wait=True):
      for table, path in paths.items():
        if _complete(path):
          continue
        remove_incomplete(path)
        tfds.disable_progress_bar()
        b = cls(config=builder.RecConfig(name=f'{table}-{fp}', table=table),
                settings=content_settings(config), prep=prep_settings(config), manual_dir=manual,
                data_dir=data_dir, file_format='array_record')
        b.download_and_prepare()
  dropped = tfds.builder_from_directory(paths[builder.ITEMS]).info.metadata['dropped_items']
  listing = os.path.join(paths[builder.ITEMS], 'dropped_items.tsv')
  if not os.path.exists(listing):
    tmp = listing + '.tmp'
    with open(tmp, 'w') as f:
      f.write('key\treason\n' + ''.join(f'{k}\t{why}\n' for k, why in dropped))
    os.replace(tmp, listing)
  return paths


def load(config, preload: bool | None = None) -> dataset_lib.RecData:
  """Prepares if needed, then reads both tables. Items stay in an ItemStore."""
  paths = prepare(config)
  items_b = tfds.builder_from_directory(paths[builder.ITEMS])
  users_b = tfds.builder_from_directory(paths[builder.USERS])
  meta = items_b.info.metadata
  items_src = items_b.as_data_source('train')
  users_src = users_b.as_data_source('train')
  num_items, num_users = len(items_src), len(users_src)

  users = users_src.__getitems__(list(range(num_users)))
  lens = np.array([len(r['items']) for r in users], np.int64)
  indptr = np.concatenate([[0], np.cumsum(lens)])
  negatives = np.stack([r['negatives'] for r in users]).astype(np.int32)

  modality = meta['modality']
  # The small per-item fields, without decoding any image or feature.
  skip = {modality: tfds.decode.SkipDecoding()}
  small = items_b.as_data_source('train', decoders=skip).__getitems__(list(range(num_items)))
  for k, rec in enumerate(small):
    if int(rec['item']) != k:
      raise DataError(f'record {k} holds item {int(rec["item"])}; the table is corrupt',
                      paths[builder.ITEMS])
  elements = [rec['elements'] for rec in small]
  max_len = max([1] + [len(e) for e in elements])
  item_elements = np.zeros((num_items, max_len), np.int32)
  for k, e in enumerate(elements):
    item_elements[k, :len(e)] = e

  if preload is None:
    preload = bool(config.dataset.get('preload', True))
  user_items = np.concatenate([r['items'] for r in users]).astype(np.int32)
  # The models' embedding lookups promise in-range ids (models/embed.py).
  _check_ids(user_items, num_items, "the users' items", paths[builder.USERS])
  _check_ids(negatives, num_items, "the users' evaluation negatives", paths[builder.USERS])
  _check_ids(item_elements, len(meta['vocab']), "the items' elements (vocabulary ids)",
             paths[builder.ITEMS])
  store = dataset_lib.ItemStore(items_src, modality, num_items, preload)
  return dataset_lib.RecData(
      name=config.dataset.name, modality=modality, source_shape=tuple(meta['source_shape']),
      vocab=list(meta['vocab']), user_indptr=indptr, user_items=user_items,
      user_times=np.concatenate([r['timestamps'] for r in users]).astype(np.float64),
      user_splits=np.concatenate([r['splits'] for r in users]).astype(np.int8),
      item_elements=item_elements, item_lengths=np.array([len(e) for e in elements], np.int32),
      train_counts=np.array([r['train_count'] for r in small], np.int64),
      cold=np.array([r['cold'] for r in small], bool),
      user_cold=np.array([r['cold'] for r in users], bool), negatives=negatives, stats=dict(meta['stats']),
      items=store, path=os.path.dirname(os.path.dirname(paths[builder.ITEMS])))


def _check_ids(ids: np.ndarray, bound: int, what: str, path: str):
  """Raises DataError unless every id is in [0, bound)."""
  bad = (ids < 0) | (ids >= bound)
  if np.any(bad):
    raise DataError(f'{what} hold id {int(ids[bad][0])}, outside [0, {bound}): '
                    f'the table is corrupt', path)


def stats_json(config) -> str:
  """The statistics line printed by `python -m cierec_jax.data`."""
  paths = prepare(config)
  meta = tfds.builder_from_directory(paths[builder.ITEMS]).info.metadata
  return json.dumps({'dataset': config.dataset.name, **meta['stats'],
                     'dropped_items_file': os.path.join(paths[builder.ITEMS], 'dropped_items.tsv')},
                    sort_keys=False)
