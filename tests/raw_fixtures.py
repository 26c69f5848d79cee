"""Small raw files in the exact formats of the real datasets, good and malformed."""

import gzip
import json
import os

import numpy as np
import PIL.Image

FEATURE_DIM = 4096


def _jpeg(path, seed, size=(40, 30)):
  arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
  PIL.Image.fromarray(arr).save(path, format='JPEG')


# ---------------------------------------------------------------- Amazon CDs
AMAZON_ITEMS = ['B000000001', 'B000000002', 'B000000003', 'B000000004', 'B000000005', 'B000000006']
AMAZON_NO_IMAGE = 'B000000005'


def amazon_reviews():
  """(reviewerID, asin, unixReviewTime): 4 users, items first seen in order, one repeated pair."""
  picks = {0: [0, 1, 2, 3], 1: [0, 2, 4], 2: [1, 4, 5], 3: [0, 1, 5]}
  rows = [(f'U{u:03d}', AMAZON_ITEMS[k], 1_300_000_000 + 1000 * u + 7 * k)
          for u, ks in picks.items() for k in ks]
  rows.append(('U000', AMAZON_ITEMS[0], 1_400_000_000))  # repeated pair, later
  return rows


def write_amazon(folder, variant='images', reviews_lines=None, meta_lines=None, features_bytes=None):
  os.makedirs(folder, exist_ok=True)
  if reviews_lines is None:
    reviews_lines = [json.dumps({'reviewerID': u, 'asin': a, 'reviewerName': 'x, "y"',
                                 'helpful': [0, 0], 'reviewText': 'good', 'overall': 5.0,
                                 'summary': 's', 'unixReviewTime': t, 'reviewTime': '01 1, 2011'})
                     for u, a, t in amazon_reviews()]
  with gzip.open(os.path.join(folder, 'reviews_CDs_and_Vinyl_5.json.gz'), 'wt') as f:
    f.write('\n'.join(reviews_lines) + '\n')
  if meta_lines is None:
    meta_lines = [
        repr({'asin': AMAZON_ITEMS[0], 'title': "It's", 'categories': [['CDs & Vinyl', 'Rock', 'Punk'], ['CDs & Vinyl', 'Pop']]}),
        repr({'asin': AMAZON_ITEMS[1], 'categories': [['CDs & Vinyl', 'Pop']], 'price': 9.99}),
        repr({'asin': AMAZON_ITEMS[2], 'categories': [['CDs & Vinyl']]}),
        repr({'asin': AMAZON_ITEMS[3], 'categories': [['CDs & Vinyl', 'Rock'], ['CDs & Vinyl', 'Rock', 'Punk']]}),
        # AMAZON_ITEMS[4] has no metadata line
    ]
  with gzip.open(os.path.join(folder, 'meta_CDs_and_Vinyl.json.gz'), 'wt') as f:
    f.write('\n'.join(meta_lines) + '\n')
  if variant == 'images':
    os.makedirs(os.path.join(folder, 'images'), exist_ok=True)
    for k, asin in enumerate(AMAZON_ITEMS):
      if asin != AMAZON_NO_IMAGE:
        _jpeg(os.path.join(folder, 'images', f'{asin}.jpg'), k)
  else:
    if features_bytes is None:
      rec = np.dtype([('asin', 'S10'), ('features', '<f4', (FEATURE_DIM,))])
      table = np.zeros(len(AMAZON_ITEMS) - 1, rec)
      for k, asin in enumerate(a for a in AMAZON_ITEMS if a != AMAZON_NO_IMAGE):
        table[k]['asin'] = asin.encode()
        table[k]['features'] = np.arange(FEATURE_DIM, dtype=np.float32) * (k + 1)
      features_bytes = table.tobytes()
    with open(os.path.join(folder, 'image_features_CDs_and_Vinyl.b'), 'wb') as f:
      f.write(features_bytes)
  return folder


# ---------------------------------------------------------------- Allrecipes
RECIPE_HEADER = 'recipe_id,recipe_name,image_url,ingredients,cooking_directions,nutritions'
RECIPES = [
    '101,"Pie, apple",http://x/101.jpg,apple^flour^sugar,"{\'directions\': \'Bake, 1h\'}","{}"',
    '102,Bread,http://x/102.jpg,flour^water^salt^yeast,"Mix.","{}"',
    '103,Soup,http://x/103.jpg,water^salt^carrot,"Boil.","{}"',
    '104,Cake,http://x/104.jpg,flour^sugar^egg,"Bake.","{}"',
    '105,Salad,http://x/105.jpg,lettuce^salt,"Toss.","{}"',
]
RECIPE_NO_IMAGE = '104'
RATING_HEADER = 'user_id,recipe_id,rating,dateLastModified'
RATINGS = {
    'train': ['1,101,5,2009-02-14T18:52:24.423', '1,102,4,2010-01-01T00:00:00', '2,101,5,2011-03-03T10:00:00',
              '2,103,3,2011-03-04T10:00:00', '3,104,5,2012-01-01T00:00:00', '3,102,5,2012-01-02T00:00:00', '3,105,1,2012-02-01T00:00:00'],
    'valid': ['1,103,4,2010-05-01T00:00:00', '2,104,2,2011-04-01T00:00:00'],
    'test': ['1,104,5,2011-01-01T00:00:00', '2,102,4,2011-05-01T00:00:00', '3,101,5,2012-06-01T00:00:00'],
}


def write_allrecipes(folder, recipes=None, ratings=None):
  os.makedirs(os.path.join(folder, 'core-data-images'), exist_ok=True)
  with open(os.path.join(folder, 'core-data_recipe.csv'), 'w') as f:
    f.write('\n'.join(recipes or [RECIPE_HEADER] + RECIPES) + '\n')
  for split, rows in (ratings or {k: [RATING_HEADER] + v for k, v in RATINGS.items()}).items():
    with open(os.path.join(folder, f'core-data-{split}_rating.csv'), 'w') as f:
      f.write('\n'.join(rows) + '\n')
  for k, line in enumerate(RECIPES):
    rid = line.split(',')[0]
    if rid != RECIPE_NO_IMAGE:
      _jpeg(os.path.join(folder, 'core-data-images', f'{rid}.jpg'), k, size=(50, 60))
  return folder


# ---------------------------------------------------------------- MovieLens (RecBole atomic)
def write_movielens(folder, inter=None):
  os.makedirs(folder, exist_ok=True)
  files = {
      'ml-100k.item': ['item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq',
                       '1\tToy Story\t1995\tAnimation Comedy', '2\tHeat\t1995\tAction Crime',
                       '3\tCasino\t1995\tDrama', '4\tUnlinked\t1996\tDrama'],
      'ml-100k.inter': inter or ['user_id:token\titem_id:token\trating:float\ttimestamp:float',
                                 '1\t1\t5\t100', '1\t2\t3\t101', '2\t3\t4\t102', '2\t1\t4\t99',
                                 '3\t4\t1\t50'],
      'ml-100k.link': ['item_id:token\tentity_id:token', '1\tm.a', '2\tm.b', '3\tm.c'],
      'ml-100k.kg': ['head_id:token\trelation_id:token\ttail_id:token',
                     'm.a\tfilm.film.actor\tm.x', 'm.b\tfilm.film.actor\tm.x',
                     'm.y\tfilm.actor.film\tm.c', 'm.a\tfilm.film.genre\tm.g',
                     'm.b\tfilm.film.genre\tm.g', 'm.c\tfilm.film.genre\tm.g',
                     'm.c\tfilm.film.actor\tm.x', 'm.b\tfilm.film.language\tm.y'],
  }
  for name, lines in files.items():
    with open(os.path.join(folder, name), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return folder
