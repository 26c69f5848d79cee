"""Pretrained encoders: which models read pre-extracted features, the glyph pretraining
corpus, the feature table, and runs that start from (or freeze) the pretrained encoder."""

import functools
import json
import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cierec_jax import checkpoint as ckpt_lib
from cierec_jax import features
from cierec_jax import prepared
from cierec_jax import pretrain
from cierec_jax import train
from cierec_jax.data import load
from cierec_jax.models import encoder_weights
from cierec_jax.models import resnet
from tests import model_helpers as mh
from tests import tiny

BASE = dict(name='cierec', ci=False, ta=False, gr=False, pi=False)


@pytest.mark.parametrize('overrides, encoder', [
    (dict(name='vbpr'), 'features'), (dict(name='mf_image'), 'features'), (BASE, 'features'),
    (dict(BASE, backbone='vbpr'), 'features'), (dict(name='cierec'), 'resnet18'),
    (dict(BASE, ci=True), 'resnet18'), (dict(name='amr'), 'features'),
    (dict(name='dropoutnet'), 'features'), (dict(name='pinet'), 'resnet18'),
    (dict(name='hafr'), 'features'), (dict(name='clcrec'), 'features'), (dict(name='vecf'), 'features'),
    (dict(name='vbpr', encoder='resnet18'), 'resnet18'), (dict(name='cierec', encoder='features'), 'features'),
    (dict(name='mf'), None), (dict(name='mf_semantics'), None)])
def test_auto_gives_the_paper_baselines_pre_extracted_features(overrides, encoder):
  assert mh.make(encoder_init='w.npz', **overrides).spec.encoder == encoder
  # Without a pretrained encoder every image model reads pixels; feature datasets read vectors.
  if encoder is not None and 'encoder' not in overrides:
    assert mh.make(**overrides).spec.encoder == 'resnet18'
    assert mh.make(modality='features', encoder_init='w.npz', **overrides).spec.encoder == 'features'


def test_freeze_encoder():
  assert mh.make(freeze_encoder=True).spec.frozen == ('encoder',)
  assert mh.make().spec.frozen == ()
  with pytest.raises(ValueError, match="freeze_encoder=True freezes the ResNet18 encoder, and "
                                       "model.name='vbpr' reads features"):
    mh.make(name='vbpr', encoder_init='w.npz', freeze_encoder=True)
  with pytest.raises(ValueError, match="freeze_encoder=True is implemented by the Recommender models"):
    mh.make(name='pinet', freeze_encoder=True)


def _config(data_dir):
  c = tiny.pretrain_config(data_dir)
  c.train.epochs = 1
  c.train.steps_per_call = tiny.END_TO_END_STEPS_PER_CALL
  return c


def _params(workdir):
  mgr = ckpt_lib.Checkpointer(workdir)
  state = mgr.manager.restore(mgr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']
  mgr.close()
  return state


@pytest.mark.slow
def test_pretrain_features_and_runs_from_them(tmp_path, capsys, monkeypatch, pretrained_encoder):
  # Pretraining: made once (by the session's fixture, into its data_dir), reused by a second call.
  path = pretrained_encoder
  with open(os.path.join(os.path.dirname(path), prepared.INFO)) as f:
    assert json.load(f)['num_train'] == 64
  stamp = os.path.getmtime(path)
  fixture_data_dir = os.path.dirname(os.path.dirname(os.path.dirname(path)))  # <data_dir>/pretrain/<fp>/
  assert pretrain.prepare(tiny.pretrain_config(fixture_data_dir)) == path and os.path.getmtime(path) == stamp
  out = capsys.readouterr().out
  assert 'pretrain: reusing' in out and 'glyph count' in out
  c = _config(str(tmp_path / 'data'))
  c.model.encoder_init = path
  D = c.model.feature_dim
  target = jax.eval_shape(lambda: resnet.ResNet18(c.model.encoder_width, D).init(
      jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32), train=False))
  weights = encoder_weights.load(path, target)

  # The feature table: every item, the frozen encoder in inference mode, reused.
  data = load.load(c)
  table_path = features.prepare(c, data)
  table = np.load(table_path)
  assert table.shape == (data.num_items, D) and table.dtype == np.float32
  ids = np.array([5, 2])  # two items alone: in inference mode the batch does not matter
  alone = resnet.ResNet18(c.model.encoder_width, D).apply(weights, data.items.content(ids), train=False)
  np.testing.assert_allclose(table[ids], alone, rtol=1e-4, atol=1e-5)
  assert features.prepare(c, data) == table_path and 'features: reusing' in capsys.readouterr().out
  # VECF's per-region table: 16x16 images leave a 1x1 last map, one region, the pooled vector.
  regions_path = features.prepare(c, data, regions=True)
  assert regions_path != table_path and 'regions: encoded' in capsys.readouterr().out
  np.testing.assert_allclose(np.load(regions_path), table[:, None], rtol=1e-5, atol=1e-6)
  # Other weights, another table.
  other = str(tmp_path / 'other.npz')
  encoder_weights.save(other, jax.tree.map(lambda x: x * 0.5, weights))
  c_other = _config(str(tmp_path / 'data'))
  c_other.model.encoder_init = other
  assert features.prepare(c_other, data) != table_path

  # VBPR reads the table, not the pixels.
  c.model.name = 'vbpr'
  res = train.train_and_evaluate(c, str(tmp_path / 'vbpr'))
  assert res['encoder'] == 'features'
  assert _params(str(tmp_path / 'vbpr'))['params']['encoder']['Dense_0']['kernel'].shape == (D, D)
  assert np.isfinite(res['test']['all']['recall@10']['mean'])

  # A ResNet model starts from the pretrained encoder and, frozen, keeps it: weights and
  # statistics. (An 'rbg' init key: the init values are overwritten, and threefry's init
  # compiles 4x slower on CPU.)
  monkeypatch.setattr(jax.random, 'key', functools.partial(jax.random.key, impl='rbg'))
  c.model.update(name='mf_image', encoder='resnet18', freeze_encoder=True)
  c.train.halt_after_steps = 2
  train.train_and_evaluate(c, str(tmp_path / 'frozen'))
  state = _params(str(tmp_path / 'frozen'))
  got = flax.traverse_util.flatten_dict({'params': state['params']['encoder'],
                                         'batch_stats': state['batch_stats']['encoder']})
  for k, v in flax.traverse_util.flatten_dict(weights).items():
    np.testing.assert_array_equal(got[k], v, err_msg='/'.join(k))
