"""train.init_from and two-stage runs: exact copies, clear refusals, the stage
sub-workdir, and a one-epoch run of each cold-start baseline."""

import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cierec_jax import checkpoint as ckpt_lib
from cierec_jax import optim
from cierec_jax import stages
from cierec_jax import train
from cierec_jax import train_step
from cierec_jax.data import builder
from cierec_jax.data import load
from cierec_jax.data import sampler as sampler_lib
from tests import tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module', autouse=True)
def fast_compilation():
  """These runs check the program end to end, not its speed: XLA's cheapest
  compilation nearly halves their cost (ResNet train steps dominate)."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def _config(data_dir, name, **model):
  c = tiny.config(data_dir)
  c.train.epochs = 1
  c.train.steps_per_call = tiny.END_TO_END_STEPS_PER_CALL
  c.model.name = name
  c.model.tower_dims = (16, 8)
  for k, v in model.items():
    setattr(c.model, k, v)
  return c


def _best(workdir):
  """The best-valid state's params, flattened, read with orbax alone."""
  mgr = ckpt_lib.Checkpointer(workdir, 1, 'best')
  state = mgr.manager.restore(mgr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']
  mgr.close()
  return flax.traverse_util.flatten_dict(state['params'], sep='/')


@pytest.fixture(scope='module')
def mf_run(tmp_path_factory):
  """(data dir, workdir) of a one-epoch MF run on the tiny synthetic data."""
  root = tmp_path_factory.mktemp('stages')
  data_dir, workdir = str(root / 'data'), str(root / 'mf')
  train.train_and_evaluate(_config(data_dir, 'mf'), workdir)
  return data_dir, workdir


def _fresh_state(config):
  data = load.load(config)
  model = train.build_model(config, data)
  s = sampler_lib.sampler_for(data, int(config.train.batch_size), 0)
  example = sampler_lib.with_item_inputs(next(s.batches(0)), data)
  state = train_step.create_state(model, optim.create(config.train, s.steps_per_epoch), example, 0)
  signature = ckpt_lib.shape_signature(config, builder.fingerprint(load.content_settings(config)))
  return state, signature


def test_init_from_copies_a_trained_mf_exactly_and_refuses_clearly(mf_run, capsys):
  data_dir, mf_dir = mf_run
  mf = _best(mf_dir)
  state, signature = _fresh_state(_config(data_dir, 'amf'))
  started = flax.traverse_util.flatten_dict(stages.init_from(state, mf_dir, signature).params, sep='/')
  assert started.keys() == mf.keys()
  for k in mf:
    np.testing.assert_array_equal(started[k], mf[k], err_msg=k)
  assert 'params: copied 5: ' in capsys.readouterr().out

  # Shape mismatches are named and keep their initial values.
  small, small_signature = _fresh_state(_config(data_dir, 'mf', embed_dim=4))
  stages.init_from(small, mf_dir, small_signature)
  out = capsys.readouterr().out
  assert 'params: copied 3: ' in out
  assert ('shapes differ, kept initial values: item_embed/embedding (source (150, 8), model (150, 4)), '
          'user_embed/embedding (source (60, 8), model (60, 4))') in out
  with pytest.raises(ValueError, match='was trained on another dataset'):
    stages.init_from(state, mf_dir, dict(signature, dataset_fingerprint='other'))
  with pytest.raises(FileNotFoundError, match='no best-valid state'):
    stages.init_from(state, data_dir, signature)
  with pytest.MonkeyPatch.context() as m:
    # Frozen subtrees (DropoutNet's MF vectors) must all come from the source.
    m.setattr(stages, 'restore_best', lambda source, sig: {
        'params': {'user_embed': _nest(mf, 'user_embed')}, 'batch_stats': {}})
    with pytest.raises(ValueError, match=r"does not provide the frozen parameters "
                       r"\['item_bias/embedding', 'item_embed/embedding'\]"):
      stages.init_from(state, mf_dir, signature, ('user_embed', 'item_embed', 'item_bias'))
    m.setattr(stages, 'restore_best', lambda source, sig: {'params': {'other': {'w': np.ones(3)}},
                                                           'batch_stats': {}})
    with pytest.raises(ValueError, match="none of this model's parameters match"):
      stages.init_from(state, mf_dir, signature)


def _nest(flat, top):
  return flax.traverse_util.unflatten_dict({k[len(top) + 1:]: v for k, v in flat.items()
                                            if k.startswith(top + '/')}, sep='/')


@pytest.mark.parametrize('name', ['amf', 'amr', 'dropoutnet', 'clcrec'])
def test_one_epoch_run(mf_run, pretrained_encoder, tmp_path, name):
  """In the paper's setting: the content models read pre-extracted features."""
  data_dir, mf_dir = mf_run
  c = _config(data_dir, name, encoder_init=pretrained_encoder)
  if name != 'amf':  # amf trains its MF stage itself; the others start from the shared MF run
    c.train.init_from = mf_dir if name in stages.PRETRAINED else ''
  workdir = str(tmp_path / name)
  res = train.train_and_evaluate(c, workdir)
  assert os.path.exists(os.path.join(workdir, 'results.json')) and res['model'] == name
  assert res['encoder'] == (None if name == 'amf' else 'features')
  assert 0.0 <= res['test']['all']['recall@10']['mean'] <= 1.0
  params = _best(workdir)
  if name == 'amf':
    stage = stages.stage_workdir(workdir, 'mf')
    assert res['init_from'] == stage and os.path.exists(os.path.join(stage, 'results.json'))
    assert stages.source_workdir(c, workdir, train_fn=None) == stage  # finished: reused, not retrained
  if name == 'dropoutnet':  # the MF vectors were copied and stayed frozen through training
    mf = _best(mf_dir)
    for k in ('user_embed/embedding', 'item_embed/embedding', 'item_bias/embedding'):
      np.testing.assert_array_equal(params[k], mf[k], err_msg=k)
  if name in ('dropoutnet', 'clcrec'):
    np.testing.assert_array_equal(params['cold'], load.load(c).cold.astype(np.float32))
