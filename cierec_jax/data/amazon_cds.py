"""Amazon CDs & Vinyl (McAuley): 5-core reviews, metadata and images/features.

Files in dataset.manual_dir:
  reviews_CDs_and_Vinyl_5.json.gz   gzip JSON lines (reviewerID, asin, unixReviewTime)
  meta_CDs_and_Vinyl.json.gz        gzip lines of Python dict literals (asin, categories)
  images/<asin>.jpg                 variant 'images'
  image_features_CDs_and_Vinyl.b    variant 'features': records of a 10-byte ASCII
                                    asin then 4096 little-endian float32
Annotation: the categories, flattened, with each path's root dropped.
"""

import ast
import gzip
import json
import os
import re

import numpy as np

from cierec_jax.data import builder
from cierec_jax.data import images
from cierec_jax.data import raw as raw_lib
from cierec_jax.data import errors
from cierec_jax.data.errors import DataError

REVIEWS = 'reviews_CDs_and_Vinyl_5.json.gz'
META = 'meta_CDs_and_Vinyl.json.gz'
FEATURES = 'image_features_CDs_and_Vinyl.b'
FEATURE_DIM = 4096
RECORD = np.dtype([('asin', 'S10'), ('features', '<f4', (FEATURE_DIM,))])
ASIN = re.compile(rb'[0-9A-Za-z]{10}')
VARIANTS = ('images', 'features')


def _lines(path: str):
  errors.require_file(path)
  try:
    with gzip.open(path, 'rt', encoding='utf-8') as f:
      for n, line in enumerate(f, start=1):
        if line.strip():
          yield n, line
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise DataError(f'not a readable gzip text file: {e}', path) from e


def _field(rec, name, kinds, path, n):
  if not isinstance(rec, dict) or name not in rec:
    raise DataError(f'missing field {name!r}', path, n)
  if not isinstance(rec[name], kinds):
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    expected = ' or '.join(k.__name__ for k in kinds)
    raise DataError(f'field {name!r} should be {expected}, got {type(rec[name]).__name__}', path, n)
  return rec[name]


def read_reviews(path: str):
  """(reviewer, asin, time) per review line."""
  out = []
  for n, line in _lines(path):
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f'not a JSON object: {e.msg}', path, n) from e
    out.append((errors.require_id(_field(rec, 'reviewerID', str, path, n), 'reviewerID', path, n),
                errors.require_id(_field(rec, 'asin', str, path, n), 'asin', path, n),
                float(_field(rec, 'unixReviewTime', (int, float), path, n))))
  if not out:
    raise DataError('no review lines', path)
  return out


def read_categories(path: str) -> dict[str, list[str]]:
  """asin -> flattened categories, root of each path dropped, first occurrence kept."""
  out = {}
  for n, line in _lines(path):
    try:
      rec = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError) as e:
      raise DataError(f'not a Python dict literal: {e}', path, n) from e
    asin = errors.require_id(_field(rec, 'asin', str, path, n), 'asin', path, n)
    cats = rec.get('categories', [])
    if not isinstance(cats, list) or not all(isinstance(c, list) for c in cats):
      raise DataError("field 'categories' should be a list of lists of names", path, n)
    names = []
    for c in cats:
      for name in c[1:]:
        if name not in names:
          names.append(name)
    out[asin] = names
  if not out:
    raise DataError('no metadata lines', path)
  return out


def check_records(path: str):
  """Refuses a feature file whose records are not a 10-byte asin + FEATURE_DIM
  float32, judging the width from the first record: the second record's asin
  must start right after it."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(2 * RECORD.itemsize)
  if not ASIN.fullmatch(head[:10]):
    raise DataError(f'record 1 does not start with a 10-character asin (got {head[:10]!r}); '
                    f'expected records of a 10-byte asin + {FEATURE_DIM} float32', path)
  second = RECORD.itemsize
  if size >= second and (size < second + 10 or ASIN.fullmatch(head[second:second + 10])):
    if size % second:
      raise DataError(f'size {size} is not a whole number of {second}-byte records '
                      f'(10-byte asin + {FEATURE_DIM} float32); record {size // second + 1} '
                      'is truncated', path)
    return
  # The first aligned offset where a second asin starts gives the actual width.
  for start in range(14, len(head) - 9, 4):
    if ASIN.fullmatch(head[start:start + 10]):
      raise DataError(f'record 1 holds {(start - 10) // 4} float32 features (record 2 starts '
                      f'at byte {start}); expected {FEATURE_DIM}', path)
  if size < second:
    raise DataError(f'{size} bytes: less than one record (10-byte asin + {FEATURE_DIM} float32 '
                    f'= {second} bytes)', path)
  raise DataError(f'record 2 does not start with an asin at byte {second}: records are not a '
                  f'10-byte asin + {FEATURE_DIM} float32', path)


def read_features(path: str, keys):
  """(missing, load) for the binary feature file, memory-mapped."""
  errors.require_file(path)
  check_records(path)
  table = np.memmap(path, dtype=RECORD, mode='r')
  row = {}
  for k, a in enumerate(table['asin']):
    try:
      row.setdefault(a.decode('ascii'), k)
    except UnicodeDecodeError as e:
      raise DataError(f'record {k + 1}: the asin is not 10 ASCII bytes', path) from e
  missing = {i: 'no record in the feature file' for i, key in enumerate(keys) if key not in row}
  return missing, (lambda i: np.array(table['features'][row[keys[i]]], np.float32))


def read(folder: str, variant: str, image_size: int) -> raw_lib.RawData:
  reviews = read_reviews(os.path.join(folder, REVIEWS))
  cats = read_categories(os.path.join(folder, META))
  item_index, user_index = {}, {}
  users, items, times = [], [], []
  for reviewer, asin, t in reviews:
    items.append(item_index.setdefault(asin, len(item_index)))
    users.append(user_index.setdefault(reviewer, len(user_index)))
    times.append(t)
  keys = list(item_index)
  elements = [cats.get(k, []) for k in keys]
  if variant == 'images':
    missing, load = images.folder_source(os.path.join(folder, 'images'), keys, image_size)
    modality, shape = raw_lib.IMAGE, (image_size, image_size, 3)
  elif variant == 'features':
    missing, load = read_features(os.path.join(folder, FEATURES), keys)
    modality, shape = raw_lib.FEATURES, (FEATURE_DIM,)
  else:
    raise DataError(f'dataset.variant={variant!r}: expected one of {VARIANTS}')
  return raw_lib.RawData(
      modality=modality, item_keys=keys, item_elements=elements, missing_source=missing,
      load_source=load, source_shape=shape, user_keys=list(user_index),
      inter_user=np.asarray(users, np.int64), inter_item=np.asarray(items, np.int64),
      inter_time=np.asarray(times, np.float64),
      stats={'items_without_metadata': sum(k not in cats for k in keys)})


class CierecAmazonCds(builder.RecBuilder):
  """Amazon CDs & Vinyl with category annotations."""

  def _image_format(self):
    return 'jpeg'

  def read_raw(self, settings, manual_dir):
    if not manual_dir:
      raise DataError('dataset.manual_dir is empty: point it at the folder with '
                      f'{REVIEWS}, {META} and images/ or {FEATURES}')
    return read(manual_dir, settings.get('variant', 'images'), int(settings.get('image_size', 224)))
