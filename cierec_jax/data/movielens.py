"""MovieLens-100K, read from the files inside the recbole==1.2.1 wheel.

Source modality: a multi-hot vector over the item's knowledge-graph entities
(`ml-100k.kg` via `ml-100k.link`), genre relations excluded, entities kept if
they occur in at least `dataset.min_entity_items` items. Items without a link
get an all-zero vector, counted in the statistics. Annotation: genres.
The data's licence forbids redistribution, so it is never copied here.
"""

import importlib.metadata
import os

import numpy as np

from cierec_jax.data import builder
from cierec_jax.data import raw as raw_lib
from cierec_jax.data import errors
from cierec_jax.data.errors import DataError

GENRE_RELATIONS = ('film.film.genre', 'film.film_genre.films_in_this_genre')
FILES = ('ml-100k.inter', 'ml-100k.item', 'ml-100k.kg', 'ml-100k.link')


def recbole_dir() -> str:
  """The ml-100k folder of the installed recbole wheel."""
  try:
    dist = importlib.metadata.distribution('recbole')
  except importlib.metadata.PackageNotFoundError as e:
    raise DataError('MovieLens-100K is read from the recbole==1.2.1 wheel, which is not '
                    'installed: run `pip install --no-deps recbole==1.2.1` (make does this)') from e
  for f in dist.files or ():
    if str(f).endswith('ml-100k/ml-100k.inter'):
      return os.path.dirname(str(dist.locate_file(f)))
  raise DataError('the installed recbole has no dataset_example/ml-100k; install recbole==1.2.1')


def read_atomic(path: str, fields: tuple[str, ...]):
  """Rows of a RecBole atomic file, checking the header names `fields` in order."""
  errors.require_file(path, 'file not found')
  with open(path, encoding='utf-8') as f:
    header = f.readline().rstrip('\n').split('\t')
    names = tuple(h.split(':')[0] for h in header)
    if names != fields:
      raise DataError(f'header {names} but expected {fields}', path, 1)
    n = 1
    for n, line in enumerate(f, start=2):
      row = line.rstrip('\n').split('\t')
      if len(row) != len(fields):
        raise DataError(f'{len(row)} tab-separated fields but expected {len(fields)}', path, n)
      yield n, row
    if n == 1:
      raise DataError('no rows after the header', path)


def read(folder: str, min_entity_items: int) -> raw_lib.RawData:
  p = lambda name: os.path.join(folder, name)
  item_keys, genres, item_index = [], [], {}
  for n, (iid, _, _, cls) in read_atomic(p('ml-100k.item'), ('item_id', 'movie_title', 'release_year', 'class')):
    iid = errors.require_id(iid, 'item_id', p('ml-100k.item'), n)
    item_index[iid] = len(item_keys)
    item_keys.append(iid)
    genres.append(cls.split())

  user_keys, user_index, users, items, times = [], {}, [], [], []
  for n, (uid, iid, _, ts) in read_atomic(p('ml-100k.inter'), ('user_id', 'item_id', 'rating', 'timestamp')):
    uid = errors.require_id(uid, 'user_id', p('ml-100k.inter'), n)
    if iid not in item_index:
      raise DataError(f'item {iid!r} is not in ml-100k.item', p('ml-100k.inter'), n)
    try:
      t = float(ts)
    except ValueError as e:
      raise DataError(f'timestamp {ts!r} is not a number', p('ml-100k.inter'), n) from e
    if uid not in user_index:
      user_index[uid] = len(user_keys)
      user_keys.append(uid)
    users.append(user_index[uid])
    items.append(item_index[iid])
    times.append(t)

  entity_item = {}
  for n, (iid, ent) in read_atomic(p('ml-100k.link'), ('item_id', 'entity_id')):
    if iid not in item_index:
      raise DataError(f'item {iid!r} is not in ml-100k.item', p('ml-100k.link'), n)
    entity_item[ent] = item_index[iid]
  item_entities = [set() for _ in item_keys]
  for _, (head, rel, tail) in read_atomic(p('ml-100k.kg'), ('head_id', 'relation_id', 'tail_id')):
    if rel in GENRE_RELATIONS:
      continue
    if head in entity_item:
      item_entities[entity_item[head]].add(tail)
    if tail in entity_item:
      item_entities[entity_item[tail]].add(head)

  counts = {}
  for ents in item_entities:
    for e in ents:
      counts[e] = counts.get(e, 0) + 1
  vocab = sorted(e for e, c in counts.items() if c >= min_entity_items)
  if not vocab:
    raise DataError(f'no KG entity occurs in >= dataset.min_entity_items={min_entity_items} items')
  col = {e: k for k, e in enumerate(vocab)}
  features = np.zeros((len(item_keys), len(vocab)), np.float32)
  for i, ents in enumerate(item_entities):
    features[i, [col[e] for e in ents if e in col]] = 1.0
  linked = set(entity_item.values())
  stats = {'items_without_kg_link': len(item_keys) - len(linked),
           'items_with_zero_features': int((features.sum(1) == 0).sum()),
           'kg_entities': len(vocab)}
  return raw_lib.RawData(
      modality=raw_lib.FEATURES, item_keys=item_keys, item_elements=genres, missing_source={},
      load_source=lambda i: features[i], source_shape=(len(vocab),), user_keys=user_keys,
      inter_user=np.asarray(users, np.int64), inter_item=np.asarray(items, np.int64),
      inter_time=np.asarray(times, np.float64), stats=stats)


class CierecMovielens100k(builder.RecBuilder):
  """MovieLens-100K with knowledge-graph features and genre annotations."""

  def read_raw(self, settings, manual_dir):
    folder = manual_dir or recbole_dir()
    return read(folder, int(settings.get('min_entity_items', 5)))
