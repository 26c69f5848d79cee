"""Allrecipes (Gao et al., HAFR): recipes, official rating splits and images.

Files in dataset.manual_dir:
  core-data_recipe.csv                       recipe_id, ..., ingredients ('^'-separated), ...
  core-data-{train,valid,test}_rating.csv    user_id, recipe_id, rating, dateLastModified
  core-data-images/<recipe_id>.jpg
Annotation: the ingredients, in the order given.
"""

import csv
import datetime
import os

import numpy as np

from cierec_jax.data import builder
from cierec_jax.data import images
from cierec_jax.data import raw as raw_lib
from cierec_jax.data import errors
from cierec_jax.data.errors import DataError

RECIPES = 'core-data_recipe.csv'
RATINGS = 'core-data-{}_rating.csv'
IMAGES = 'core-data-images'
RATING_FIELDS = ('user_id', 'recipe_id', 'rating', 'dateLastModified')


def _rows(path: str, required: tuple[str, ...]):
  """(line number, row dict) of a CSV file whose header has the required columns
  and at least one row. Strict dialect: a quote left open is an error, not a
  field that swallows the rest of the file."""
  errors.require_file(path)
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f, strict=True)
    start, rows = 1, 0  # start: the line where the next record starts
    try:
      header = reader.fieldnames or []
      lacking = [c for c in required if c not in header]
      if lacking:
        raise DataError(f'header lacks column(s) {lacking}; expected {list(required)}', path, 1)
      start = reader.line_num + 1
      for row in reader:
        if None in row or any(row[c] is None for c in required):
          raise DataError(f'{len(header)} columns expected', path, start)
        yield start, row
        start, rows = reader.line_num + 1, rows + 1
    except csv.Error as e:
      hint = ' (a quoted field is never closed: is the file cut short?)' if 'end of data' in str(e) else ''
      raise DataError(f'malformed CSV: {e}{hint}', path, start) from e
    if not rows:
      raise DataError('no rows after the header', path)


def parse_time(value: str, path: str, line: int) -> float:
  try:
    t = datetime.datetime.fromisoformat(value.strip())
  except ValueError as e:
    raise DataError(f'dateLastModified {value!r} is not an ISO date-time', path, line) from e
  if t.tzinfo is None:
    t = t.replace(tzinfo=datetime.timezone.utc)
  return t.timestamp()


def read(folder: str, image_size: int) -> raw_lib.RawData:
  path = os.path.join(folder, RECIPES)
  keys, elements, index = [], [], {}
  for n, row in _rows(path, ('recipe_id', 'ingredients')):
    key = errors.require_id(row['recipe_id'], 'recipe_id', path, n)
    if key in index:
      raise DataError(f'recipe_id {key!r} repeats', path, n)
    index[key] = len(keys)
    keys.append(key)
    elements.append([t.strip() for t in row['ingredients'].split('^') if t.strip()])

  user_index, users, items, times, splits = {}, [], [], [], []
  for split, name in enumerate(raw_lib.SPLIT_NAMES):
    path = os.path.join(folder, RATINGS.format(name))
    for n, row in _rows(path, RATING_FIELDS):
      rid = errors.require_id(row['recipe_id'], 'recipe_id', path, n)
      if rid not in index:
        raise DataError(f'recipe_id {rid!r} is not in {RECIPES}', path, n)
      uid = errors.require_id(row['user_id'], 'user_id', path, n)
      users.append(user_index.setdefault(uid, len(user_index)))
      items.append(index[rid])
      times.append(parse_time(row['dateLastModified'], path, n))
      splits.append(split)

  missing, load = images.folder_source(os.path.join(folder, IMAGES), keys, image_size)
  return raw_lib.RawData(
      modality=raw_lib.IMAGE, item_keys=keys, item_elements=elements, missing_source=missing,
      load_source=load, source_shape=(image_size, image_size, 3), user_keys=list(user_index),
      inter_user=np.asarray(users, np.int64), inter_item=np.asarray(items, np.int64),
      inter_time=np.asarray(times, np.float64), inter_split=np.asarray(splits, np.int8))


class CierecAllrecipes(builder.RecBuilder):
  """Allrecipes with ingredient annotations and the official splits."""

  def _image_format(self):
    return 'jpeg'

  def read_raw(self, settings, manual_dir):
    if not manual_dir:
      raise DataError(f'dataset.manual_dir is empty: point it at the folder with {RECIPES}, '
                      f'{RATINGS.format("{train,valid,test}")} and {IMAGES}/')
    return read(manual_dir, int(settings.get('image_size', 224)))
