"""The synthetic builder: determinism, seeds, atomic preparation and the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cierec_jax.data import builder
from cierec_jax.data import load
from cierec_jax.data import synthetic
from tests import tiny

REQUIRED_STATS = ('users', 'items', 'interactions', 'elements', 'sparsity', 'train', 'valid',
                  'test', 'cold_items', 'warm_items', 'dropped_items',
                  'test_users_with_cold_positives')


def _arrays(d):
  return dict(items=d.user_items, times=d.user_times, splits=d.user_splits, neg=d.negatives,
              elements=d.item_elements, images=d.items.raw(np.arange(d.num_items)))


def test_same_seed_identical_different_seed_differs(tmp_path):
  a = _arrays(load.load(tiny.config(str(tmp_path / 'a'), seed=3)))
  b = _arrays(load.load(tiny.config(str(tmp_path / 'b'), seed=3)))
  c = _arrays(load.load(tiny.config(str(tmp_path / 'c'), seed=4)))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert not np.array_equal(a['images'], c['images'])
  assert not np.array_equal(a['neg'], c['neg'])


def test_reuses_prepared_data(tiny_config):
  paths = load.prepare(tiny_config)
  stamp = {p: os.path.getmtime(os.path.join(p, 'dataset_info.json')) for p in paths.values()}
  assert load.prepare(tiny_config) == paths
  assert stamp == {p: os.path.getmtime(os.path.join(p, 'dataset_info.json')) for p in paths.values()}


def test_interrupted_preparation_is_not_trusted(tiny_config, monkeypatch):
  real = synthetic.generate

  def broken(settings):
    raw = real(settings)
    load_source = raw.load_source

    def fail_midway(i):
      if i == 20:
        raise KeyboardInterrupt('killed')
      return load_source(i)
    raw.load_source = fail_midway
    return raw

  monkeypatch.setattr(synthetic, 'generate', broken)
  builder._PREPARED_CACHE.clear()
  with pytest.raises(KeyboardInterrupt):
    load.prepare(tiny_config)
  _, fp, data_dir, paths = load._paths(tiny_config)
  assert not any(os.path.exists(p) for p in paths.values()), 'a half-built table would be trusted'
  monkeypatch.setattr(synthetic, 'generate', real)
  builder._PREPARED_CACHE.clear()
  d = load.load(tiny_config)
  assert d.num_items == tiny_config.dataset.num_items
  del fp, data_dir


def test_images_show_the_elements(tiny_data):
  d = tiny_data
  img = d.items.raw(np.arange(d.num_items))
  assert img.shape == (d.num_items, 16, 16, 3) and img.dtype == np.uint8
  x = d.items.content(np.arange(4))
  assert x.dtype == np.float32 and abs(float(x.mean())) < 3
  # colourful glyph pixels exist in every image
  sat = img.max(-1).astype(int) - img.min(-1)
  assert (sat.reshape(len(img), -1).max(1) > 100).all()


def test_popularity_is_long_tailed(tiny_data):
  counts = np.sort(np.bincount(tiny_data.user_items, minlength=tiny_data.num_items))[::-1]
  top = counts[:len(counts) // 10].sum() / counts.sum()
  assert top > 0.2, f'the top 10% of items hold only {top:.0%} of interactions'


def test_cli_prints_stats_json_line(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, '-m', 'cierec_jax.data', '--config=configs/default.py',
         f'--config.dataset.data_dir={tmp_path}', '--config.dataset.num_users=40',
         '--config.dataset.num_items=120', '--config.eval.num_negatives=30',
         '--config.eval.repeats=1', '--config.dataset.image_size=16']
  out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
  stats = json.loads(out.stdout.strip().splitlines()[-1])
  for k in REQUIRED_STATS:
    assert k in stats, k
  assert stats['users'] == 40 and stats['items'] == 120
  assert stats['train'] + stats['valid'] + stats['test'] == stats['interactions']
  assert stats['cold_items'] + stats['warm_items'] == stats['items']


def test_cli_unknown_field_is_an_error(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, '-m', 'cierec_jax.data', '--config=configs/default.py',
         f'--config.dataset.data_dir={tmp_path}', '--config.dataset.num_user=40']
  out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
  assert out.returncode != 0
  assert 'num_user' in out.stderr


def test_unknown_dataset_name(tiny_config):
  tiny_config.dataset.name = 'nope'
  with pytest.raises(ValueError, match="config.dataset.name='nope'"):
    load.prepare(tiny_config)


def test_table_dir_layout(tiny_config):
  paths = load.prepare(tiny_config)
  assert paths[builder.ITEMS].endswith('/' + builder.VERSION)
  assert os.path.exists(os.path.join(paths[builder.ITEMS], 'dropped_items.tsv'))


def test_blocks_of_users_draw_the_same_interactions(monkeypatch):
  settings = {**tiny.config('unused').dataset.to_dict()}
  whole = synthetic.generate(settings)
  monkeypatch.setattr(synthetic, 'USER_BLOCK', 7)
  blocks = synthetic.generate(settings)
  for field in ('inter_user', 'inter_item', 'inter_time'):
    np.testing.assert_array_equal(getattr(blocks, field), getattr(whole, field), err_msg=field)


def test_vocabulary_beyond_shape_and_colour():
  # The default's 24 elements keep their names (and hence the default dataset).
  assert synthetic.element_names(4, 6)[:3] == ['red_circle', 'green_circle', 'blue_circle']
  names = synthetic.element_names(8, 57, 6)  # configs/synthetic_large.py: Table I's 2,736
  assert len(names) == len(set(names)) == 2736
  glyphs = synthetic.glyphs(1, 1, 3)
  images = [synthetic.render([g[1:]], 32, np.random.default_rng(0), 0.0) for g in glyphs]
  ink = [int((img.max(-1) > 100).sum()) for img in images]
  assert ink[0] < ink[1] < ink[2], ink  # larger glyph sizes cover more pixels
  with pytest.raises(ValueError, match='dataset.num_colours'):
    synthetic.element_names(4, 1000)
