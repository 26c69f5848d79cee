"""Every real-dataset reader on fixtures in the exact raw formats, good and malformed."""

import gzip
import json
import os

import numpy as np
import pytest

from cierec_jax.data import allrecipes
from cierec_jax.data import amazon_cds
from cierec_jax.data import load
from cierec_jax.data import movielens
from cierec_jax.data import raw as raw_lib
from cierec_jax.data.errors import DataError
from configs import allrecipes as allrecipes_config
from configs import cds as cds_config
from configs import movielens as movielens_config
from tests import raw_fixtures as fx


def _small(config, data_dir, manual_dir):
  config.dataset.data_dir = str(data_dir)
  config.dataset.manual_dir = str(manual_dir)
  # The Amazon fixture's users have <= 4 interactions: 0.6/0.1 leaves valid empty (refused).
  config.dataset.train_fraction = 0.5
  config.dataset.valid_fraction = 0.25
  config.eval.num_negatives = 1
  config.eval.repeats = 2
  return config


# ---------------------------------------------------------------- Amazon CDs
def test_amazon_images_parse_and_prepare(tmp_path):
  folder = fx.write_amazon(str(tmp_path / 'raw'))
  raw = amazon_cds.read(folder, 'images', 24)
  assert raw.item_keys == fx.AMAZON_ITEMS
  assert raw.item_elements[0] == ['Rock', 'Punk', 'Pop']  # root dropped, flattened, deduplicated
  assert raw.item_elements[3] == ['Rock', 'Punk']
  assert raw.item_elements[2] == [] and raw.item_elements[4] == [] and raw.item_elements[5] == []
  assert raw.missing_source == {4: f'no image file {fx.AMAZON_NO_IMAGE}.jpg'}
  assert raw.load_source(0).shape == (24, 24, 3)
  assert raw.stats['items_without_metadata'] == 2

  c = _small(cds_config.get_config(), tmp_path / 'data', folder)
  c.dataset.image_size = 24
  d = load.load(c)
  assert d.num_items == 5 and d.stats['dropped_items'] == 1
  assert d.stats['duplicate_interactions'] == 1 and d.stats['dropped_interactions'] == 2
  assert d.items.raw(np.arange(5)).shape == (5, 24, 24, 3)
  paths = load.prepare(c)
  with open(os.path.join(paths['items'], 'dropped_items.tsv')) as f:
    assert fx.AMAZON_NO_IMAGE in f.read()


def test_amazon_features_parse(tmp_path):
  folder = fx.write_amazon(str(tmp_path / 'raw'), variant='features')
  raw = amazon_cds.read(folder, 'features', 0)
  assert raw.modality == raw_lib.FEATURES and raw.source_shape == (4096,)
  assert list(raw.missing_source) == [4]
  assert raw.item_keys[5] == 'B000000006'
  np.testing.assert_array_equal(raw.load_source(1), np.arange(4096, dtype=np.float32) * 2)
  c = _small(cds_config.get_config(), tmp_path / 'data', folder)
  c.dataset.variant = 'features'
  d = load.load(c)
  assert d.items.content(np.array([0])).shape == (1, 4096)


@pytest.mark.parametrize('lines, line_no, message', [
    (['{"reviewerID": "U1", "asin": "B1", "unixReviewTime": 5}', '{"reviewerID": "U1", "asin": '], 2, 'not a JSON object'),
    (['{"reviewerID": "U1", "unixReviewTime": 5}'], 1, "missing field 'asin'"),
    (['{"reviewerID": "U1", "asin": "B1", "unixReviewTime": "5"}'], 1, "'unixReviewTime' should be"),
])
def test_amazon_malformed_reviews(tmp_path, lines, line_no, message):
  folder = fx.write_amazon(str(tmp_path), reviews_lines=lines)
  with pytest.raises(DataError, match=message) as e:
    amazon_cds.read(folder, 'images', 24)
  assert f'reviews_CDs_and_Vinyl_5.json.gz:{line_no}:' in str(e.value)


def test_amazon_files_without_records(tmp_path):
  folder = fx.write_amazon(str(tmp_path / 'a'), reviews_lines=[''])
  with pytest.raises(DataError, match=r'reviews_CDs_and_Vinyl_5.json.gz: no review lines'):
    amazon_cds.read(folder, 'images', 24)
  folder = fx.write_amazon(str(tmp_path / 'b'), meta_lines=[''])
  with pytest.raises(DataError, match=r'meta_CDs_and_Vinyl.json.gz: no metadata lines'):
    amazon_cds.read(folder, 'images', 24)


def test_amazon_malformed_meta(tmp_path):
  folder = fx.write_amazon(str(tmp_path), meta_lines=[repr({'asin': 'B1'}), "{'asin': 'B2', 'categories': [['a'"])
  with pytest.raises(DataError, match=r'meta_CDs_and_Vinyl.json.gz:2: not a Python dict literal'):
    amazon_cds.read(folder, 'images', 24)
  folder = fx.write_amazon(str(tmp_path), meta_lines=[repr({'asin': 'B1', 'categories': 'Rock'})])
  with pytest.raises(DataError, match=r"json.gz:1: field 'categories' should be a list of lists"):
    amazon_cds.read(folder, 'images', 24)


def test_amazon_truncated_feature_file(tmp_path):
  good = fx.write_amazon(str(tmp_path / 'good'), variant='features')
  with open(os.path.join(good, 'image_features_CDs_and_Vinyl.b'), 'rb') as f:
    data = f.read()
  folder = fx.write_amazon(str(tmp_path / 'bad'), variant='features', features_bytes=data[:-100])
  with pytest.raises(DataError, match=r'image_features_CDs_and_Vinyl.b: size .* record 5 is truncated'):
    amazon_cds.read(folder, 'features', 0)


def test_amazon_missing_files(tmp_path):
  with pytest.raises(DataError, match=r'reviews_CDs_and_Vinyl_5.json.gz: file not found'):
    amazon_cds.read(str(tmp_path), 'images', 24)
  folder = fx.write_amazon(str(tmp_path / 'x'))
  with pytest.raises(DataError, match=r"dataset.variant='photos'"):
    amazon_cds.read(folder, 'photos', 24)
  c = _small(cds_config.get_config(), tmp_path / 'data', '')
  with pytest.raises(DataError, match='dataset.manual_dir is empty'):
    load.prepare(c)


def test_amazon_not_gzip(tmp_path):
  folder = fx.write_amazon(str(tmp_path))
  with open(os.path.join(folder, 'reviews_CDs_and_Vinyl_5.json.gz'), 'w') as f:
    f.write('plain text\n')
  with pytest.raises(DataError, match='not a readable gzip'):
    amazon_cds.read(folder, 'images', 24)


def test_amazon_corrupt_image_names_the_file(tmp_path):
  folder = fx.write_amazon(str(tmp_path))
  bad = os.path.join(folder, 'images', f'{fx.AMAZON_ITEMS[1]}.jpg')
  with open(bad, 'wb') as f:
    f.write(b'not a jpeg')
  raw = amazon_cds.read(folder, 'images', 24)
  with pytest.raises(DataError, match=f'{fx.AMAZON_ITEMS[1]}.jpg: cannot decode image'):
    raw.load_source(1)


# ---------------------------------------------------------------- Allrecipes
def test_allrecipes_parse_and_prepare(tmp_path):
  folder = fx.write_allrecipes(str(tmp_path / 'raw'))
  raw = allrecipes.read(folder, 20)
  assert raw.item_keys == ['101', '102', '103', '104', '105']
  assert raw.item_elements[1] == ['flour', 'water', 'salt', 'yeast']
  assert raw.missing_source == {3: 'no image file 104.jpg'}
  assert raw.inter_split.tolist() == [0] * 7 + [1] * 2 + [2] * 3
  assert raw.load_source(0).shape == (20, 20, 3)

  c = _small(allrecipes_config.get_config(), tmp_path / 'data', folder)
  c.dataset.image_size = 20
  d = load.load(c)
  assert d.num_items == 4 and d.stats['dropped_items'] == 1
  assert d.stats['dropped_interactions'] == 3  # the ratings of recipe 104
  # the official splits are kept, not recomputed by time
  users, items = d.split(raw_lib.TEST)
  assert sorted(zip(users.tolist(), items.tolist())) == [(1, 1), (2, 0)]


@pytest.mark.parametrize('split, row, message', [
    ('train', '1,999,5,2009-02-14T18:52:24', "recipe_id '999' is not in core-data_recipe.csv"),
    ('valid', '1,101,5,yesterday', "dateLastModified 'yesterday' is not an ISO date-time"),
    ('test', '1,101', '4 columns expected'),
])
def test_allrecipes_malformed_ratings(tmp_path, split, row, message):
  ratings = {k: [fx.RATING_HEADER] + v for k, v in fx.RATINGS.items()}
  ratings[split] = ratings[split][:2] + [row] + ratings[split][2:]
  folder = fx.write_allrecipes(str(tmp_path), ratings=ratings)
  with pytest.raises(DataError, match=message) as e:
    allrecipes.read(folder, 20)
  assert f'core-data-{split}_rating.csv:3:' in str(e.value)


def test_allrecipes_malformed_recipes(tmp_path):
  folder = fx.write_allrecipes(str(tmp_path / 'a'), recipes=['recipe_id,recipe_name'] + ['101,Pie'])
  with pytest.raises(DataError, match=r"core-data_recipe.csv:1: header lacks column\(s\) \['ingredients'\]"):
    allrecipes.read(folder, 20)
  folder = fx.write_allrecipes(str(tmp_path / 'b'), recipes=[fx.RECIPE_HEADER] + fx.RECIPES + [fx.RECIPES[0]])
  with pytest.raises(DataError, match=r"core-data_recipe.csv:7: recipe_id '101' repeats"):
    allrecipes.read(folder, 20)
  folder = fx.write_allrecipes(str(tmp_path / 'c'))
  os.remove(os.path.join(folder, 'core-data-valid_rating.csv'))
  with pytest.raises(DataError, match=r'core-data-valid_rating.csv: file not found'):
    allrecipes.read(folder, 20)


# ---------------------------------------------------------------- MovieLens
def test_movielens_fixture(tmp_path):
  folder = fx.write_movielens(str(tmp_path))
  raw = movielens.read(folder, min_entity_items=2)
  feats = np.stack([raw.load_source(i) for i in range(4)])
  np.testing.assert_array_equal(feats, [[1, 0], [1, 1], [1, 1], [0, 0]])  # m.x, m.y; genres excluded
  assert raw.item_elements[1] == ['Action', 'Crime']
  assert raw.stats['items_without_kg_link'] == 1 and raw.stats['items_with_zero_features'] == 1


def test_movielens_malformed(tmp_path):
  folder = fx.write_movielens(str(tmp_path / 'a'), inter=['user_id:token\titem_id:token\trating:float'])
  with pytest.raises(DataError, match=r'ml-100k.inter:1: header'):
    movielens.read(folder, 2)
  folder = fx.write_movielens(str(tmp_path / 'b'), inter=[
      'user_id:token\titem_id:token\trating:float\ttimestamp:float', '1\t1\t5\t100', '1\t2\t5'])
  with pytest.raises(DataError, match=r'ml-100k.inter:3: 3 tab-separated fields but expected 4'):
    movielens.read(folder, 2)
  folder = fx.write_movielens(str(tmp_path / 'c'), inter=[
      'user_id:token\titem_id:token\trating:float\ttimestamp:float', '1\t77\t5\t100'])
  with pytest.raises(DataError, match=r"ml-100k.inter:2: item '77' is not in ml-100k.item"):
    movielens.read(folder, 2)


def test_movielens_real_files(tmp_path):
  c = movielens_config.get_config()
  c.dataset.data_dir = str(tmp_path)
  stats = json.loads(load.stats_json(c))
  assert stats['users'] == 943 and stats['items'] == 1682 and stats['interactions'] == 100000
  assert stats['elements'] == 19  # the 18 genres and 'unknown'
  assert stats['items_without_kg_link'] == 1682 - 1598


def test_movielens_empty_ids_and_files(tmp_path):
  header = 'user_id:token\titem_id:token\trating:float\ttimestamp:float'
  folder = fx.write_movielens(str(tmp_path / 'a'), inter=[header, '1\t1\t5\t100', ' \t2\t5\t101'])
  with pytest.raises(DataError, match=r'ml-100k.inter:3: empty user_id'):
    movielens.read(folder, 2)
  folder = fx.write_movielens(str(tmp_path / 'b'), inter=[header])
  with pytest.raises(DataError, match=r'ml-100k.inter: no rows after the header'):
    movielens.read(folder, 2)
  folder = fx.write_movielens(str(tmp_path / 'c'))
  open(os.path.join(folder, 'ml-100k.item'), 'w').close()
  with pytest.raises(DataError, match=r'ml-100k.item: empty file \(0 bytes\)'):
    movielens.read(folder, 2)
