"""VECF, HAFR-non-i and PiNet against numpy; the encoders' VECF regions."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cierec_jax import train
from cierec_jax.models import attention
from cierec_jax.models import pinet
from cierec_jax.models import resnet
from tests import model_helpers as mh
from tests import tiny

def _relu(x):
  return np.maximum(x, 0)


def _softmax(x, mask):
  """Softmax among mask; zeros for a row with nothing in it."""
  x = np.where(mask, x, -1e30)
  z = np.exp(x - x.max(-1, keepdims=True)) * mask
  return z / np.maximum(z.sum(-1, keepdims=True), 1e-30)


@functools.lru_cache
def _setup(name, seed=0, **overrides):
  """A feature-modality model with every parameter random (no zero biases), a
  batch in which some items have few or no non-zero features, and numpy params."""
  model = mh.make(modality='features', name=name, **overrides)
  batch = mh.batch(5, modality='features', seed=seed)
  rng = np.random.default_rng(seed + 1)
  for side in ('pos', 'neg'):
    x = np.array(batch[f'{side}_content'])
    x[0, 3:] = 0.0  # three non-zero entries
    x[1] = 0.0  # none
    batch[f'{side}_content'] = jnp.asarray(x)
    lengths = np.array([3, 0, 1, 4, 2], np.int32)  # an empty annotation too
    elements = rng.integers(1, mh.E, (5, mh.L))
    batch[f'{side}_lengths'] = jnp.asarray(lengths)
    batch[f'{side}_elements'] = jnp.asarray(np.where(np.arange(mh.L) < lengths[:, None], elements, 0), jnp.int32)
  shapes = mh.shapes(model, batch)['params']  # traced, not compiled: every value is replaced
  params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.5, jnp.float32), shapes)
  np_params = jax.tree.map(np.asarray, params)
  return model, batch, {'params': params}, np_params


@functools.lru_cache
def _jitted(model, train):
  return jax.jit(lambda v, b, r: model.apply(v, b, None, train=train, rngs=r))


def _apply(model, variables, batch, train, rngs=None):
  return _jitted(model, train)(variables, batch, rngs or mh.rngs(0))


def _user_item(batch, side):
  u, i = np.asarray(batch['user']), np.asarray(batch[side])
  return u, i, np.asarray(batch[f'{side}_content'])


def numpy_vecf(p, batch, side, max_regions):
  """y = alpha + b_u + b_i + p_u . (q_i + Dense(sum_l alpha_l r_l)), regions the
  largest non-zero features, attention w . relu(W_u p_u + W_r r_l + b)."""
  u, i, x = _user_item(batch, side)
  index = np.argsort(-np.abs(x), axis=1, kind='stable')[:, :max_regions]
  value = np.take_along_axis(x, index, 1)
  enc = p['encoder']['Dense_0']
  r = _relu(enc['kernel'][index] + enc['bias'])  # [B, M, D] the encoder's output for entry k alone
  pu = p['user_embed']['embedding'][u]
  att = p['attention']
  logits = _relu((pu @ att['query']['kernel'])[:, None] + r @ att['key']['kernel'] + att['key']['bias']) @ att['score']
  weights = _softmax(logits, value != 0)
  pooled = np.einsum('bm,bmd->bd', weights, r)
  v = np.where((value != 0).any(1, keepdims=True), pooled @ p['project']['kernel'] + p['project']['bias'], 0.0)
  q = p['item_embed']['embedding'][i]
  return (p['alpha'] + p['user_bias']['embedding'][u, 0] + p['item_bias']['embedding'][i, 0]
          + np.sum(pu * (q + v), -1)), weights


def test_vecf_attention_and_pooled_feature_match_numpy():
  model, batch, variables, p = _setup('vecf', vecf_max_regions=4)
  out = _apply(model, variables, batch, False)
  for side in ('pos', 'neg'):
    want, weights = numpy_vecf(p, batch, side, 4)
    np.testing.assert_allclose(out[side], want, rtol=1e-4, atol=1e-5)
    assert np.allclose(weights[0, 3:], 0) and np.allclose(weights[1], 0)  # empty slots, no regions
    assert np.allclose(weights[2:].sum(1), 1) and weights[2:].std() > 0.01  # not uniform


def test_vecf_on_pre_extracted_regions_matches_numpy():
  """Image datasets with a pretrained encoder: each of the item's R region
  vectors goes through relu(Dense_D), then the same attention over all R."""
  model = mh.make(name='vecf', encoder_init='w.npz')
  assert model.spec.encoder == 'features' and model.spec.region_features
  assert not mh.make(modality='features', name='vecf', encoder_init='w.npz').spec.region_features
  rng = np.random.default_rng(4)
  batch = mh.batch(5, modality='features')
  for side in ('pos', 'neg'):
    batch[f'{side}_content'] = jnp.asarray(rng.normal(size=(5, 3, 10)), jnp.float32)  # [B, R, F]
  shapes = mh.shapes(model, batch)['params']
  p = jax.tree.map(lambda a: np.asarray(rng.normal(size=a.shape) * 0.5, np.float32), shapes)
  out = model.apply({'params': p}, batch, None, train=False)
  for side in ('pos', 'neg'):
    u, i, x = _user_item(batch, side)
    enc = p['encoder']['Dense_0']
    r = _relu(x @ enc['kernel'] + enc['bias'])  # [B, R, D]
    pu = p['user_embed']['embedding'][u]
    att = p['attention']
    logits = _relu((pu @ att['query']['kernel'])[:, None] + r @ att['key']['kernel'] + att['key']['bias']) @ att['score']
    weights = _softmax(logits, np.ones(logits.shape, bool))
    v = np.einsum('bm,bmd->bd', weights, r) @ p['project']['kernel'] + p['project']['bias']
    q = p['item_embed']['embedding'][i]
    want = (p['alpha'] + p['user_bias']['embedding'][u, 0] + p['item_bias']['embedding'][i, 0]
            + np.sum(pu * (q + v), -1))
    np.testing.assert_allclose(out[side], want, rtol=1e-4, atol=1e-5)
    assert weights.std() > 0.01  # not uniform


def test_hafr_attention_and_pooled_feature_match_numpy():
  model, batch, variables, p = _setup('hafr')
  out = _apply(model, variables, batch, False)
  for side in ('pos', 'neg'):
    u, i, x = _user_item(batch, side)
    e = _relu(x @ p['encoder']['Dense_0']['kernel'] + p['encoder']['Dense_0']['bias'])
    x_v = e @ p['image']['kernel'] + p['image']['bias']
    elements, lengths = np.asarray(batch[f'{side}_elements']), np.asarray(batch[f'{side}_lengths'])
    c = p['element_embed']['embedding'][elements]  # [B, L, d]
    pu, q = p['user_embed']['embedding'][u], p['item_embed']['embedding'][i]
    # Ingredient level: w . tanh(W [c_l; p_u; x_v] + b), masked softmax.
    a = p['ingredient_attention']
    key_in = np.concatenate([c, np.broadcast_to(x_v[:, None], c.shape)], -1)
    pre = key_in @ a['key']['kernel'] + a['key']['bias'] + (pu @ a['query']['kernel'])[:, None]
    mask = np.arange(elements.shape[1]) < lengths[:, None]
    alpha = _softmax(np.tanh(pre) @ a['score'], mask)
    x_t = np.einsum('bl,bld->bd', alpha, c)
    # Component level over (q_i, x_t, x_v), then the prediction layer.
    b = p['component_attention']
    parts = np.stack([q, x_t, x_v], 1)
    pre = parts @ b['key']['kernel'] + b['key']['bias'] + (pu @ b['query']['kernel'])[:, None]
    beta = _softmax(np.tanh(pre) @ b['score'], np.ones((len(u), 3), bool))
    f = np.einsum('bk,bkd->bd', beta, parts)
    h = np.concatenate([pu, f, pu * f], -1) @ p['hidden']['kernel'] + p['hidden']['bias']
    want = _relu(h) @ p['out']['kernel'][:, 0]
    np.testing.assert_allclose(out[side], want, rtol=1e-4, atol=1e-5)
    assert (lengths == 0).any() and (lengths > 1).any()


def test_hafr_dropout_only_in_training():
  model, batch, variables, _ = _setup('hafr')
  a = _apply(model, variables, batch, True, mh.rngs(1))['pos']
  b = _apply(model, variables, batch, True, mh.rngs(2))['pos']
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(_apply(model, variables, batch, False)['pos'],
                                _apply(model, variables, batch, False)['pos'])


def test_pinet_gates_and_semantic_loss_match_numpy():
  model, batch, variables, p = _setup('pinet', semantic_loss_weight=0.7)
  out = _apply(model, variables, batch, True)
  semantic = 0.0
  for side in ('pos', 'neg'):
    u, i, x = _user_item(batch, side)
    e = _relu(x @ p['encoder']['Dense_0']['kernel'] + p['encoder']['Dense_0']['bias'])
    g = p['gates']
    x_c = e / (1 + np.exp(-(e @ g['collaborative']['kernel'] + g['collaborative']['bias'])))
    x_s = e / (1 + np.exp(-(e @ g['semantic']['kernel'] + g['semantic']['bias'])))
    v = x_c @ p['collaborative']['mlp_v']['kernel'] + p['collaborative']['mlp_v']['bias']
    v = np.where(v > 0, v, 0.01 * v)
    pu = p['user_embed']['embedding'][u]
    want = (p['alpha'] + p['user_bias']['embedding'][u, 0] + p['item_bias']['embedding'][i, 0]
            + np.sum(pu * v, -1))
    np.testing.assert_allclose(out[side], want, rtol=1e-4, atol=1e-5)
    # Multi-label loss over element ids 1..E-1; an empty annotation adds nothing.
    z = x_s @ p['semantic']['kernel'] + p['semantic']['bias']
    elements, lengths = np.asarray(batch[f'{side}_elements']), np.asarray(batch[f'{side}_lengths'])
    t = np.zeros_like(z)
    for row, (el, n) in enumerate(zip(elements, lengths)):
      t[row, el[:n] - 1] = 1.0
    bce = np.mean(np.logaddexp(0, z) - t * z, -1) * (lengths > 0)
    semantic = semantic + 0.5 * bce
  np.testing.assert_allclose(out['losses']['semantic'], 0.7 * semantic, rtol=1e-4, atol=1e-6)
  assert set(out['losses']) == {'semantic'}


def test_semantic_loss_ignores_padding():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5)), jnp.float32)
  a = pinet.semantic_loss(logits, jnp.array([[2, 4, 0], [1, 0, 0]]), jnp.array([2, 1]))
  b = pinet.semantic_loss(logits, jnp.array([[2, 4, 3], [1, 5, 5]]), jnp.array([2, 1]))
  np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a ResNet18 forward compiled
def test_resnet_spatial_regions_pool_to_the_pooled_output():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 40, 40, 3)), jnp.float32)
  pooled, spatial = resnet.ResNet18(4, 16), resnet.ResNet18(4, 16, spatial=True)
  shapes = jax.eval_shape(lambda k: pooled.init(k, x, False), jax.random.key(0))
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(
      jnp.shape, jax.eval_shape(lambda k: spatial.init(k, x, False), jax.random.key(0)))  # same names
  rng = np.random.default_rng(1)  # random values, BatchNorm variances positive
  v = jax.tree.map(lambda a: jnp.asarray(np.abs(rng.normal(size=a.shape)) + 0.5, jnp.float32), shapes)
  regions, want = jax.jit(lambda v, x: (spatial.apply(v, x, False), pooled.apply(v, x, False)))(v, x)
  assert regions.shape == (2, 4, 16)  # a 2x2 last feature map at 40x40
  np.testing.assert_allclose(regions.mean(1), want, rtol=1e-5, atol=1e-5)


def test_feature_regions_are_the_largest_entries():
  enc = resnet.FeatureEncoder(3, regions=2)
  x = jnp.array([[0.0, -3.0, 1.0, 2.0], [0.0, 0.0, 5.0, 0.0]])
  v = enc.init(jax.random.key(0), x, False)
  assert jax.tree.map(jnp.shape, v) == {'params': {'Dense_0': {'kernel': (4, 3), 'bias': (3,)}}}
  entries, index, mask = enc.apply(v, x, False)
  one_hot = jnp.eye(4)  # each entry alone
  np.testing.assert_allclose(entries, resnet.FeatureEncoder(3).apply(v, one_hot, False), atol=1e-6)
  np.testing.assert_array_equal(index[0], [1, 3])
  np.testing.assert_array_equal(mask, [[True, True], [True, False]])


def test_candidate_chunks_equal_one_call(monkeypatch):
  cands = jnp.arange(14).reshape(2, 7) % 5
  fn = lambda c: jnp.stack([c * 2.0, c + 1.0], -1)
  monkeypatch.setattr(attention, 'CHUNK_FLOATS', 6)  # chunks of 3 columns, the last one padded
  np.testing.assert_array_equal(attention.over_candidate_chunks(fn, cands, 1), fn(cands))


@pytest.mark.parametrize('chunk_floats', [6, 4, 1000])  # chunks of 3 (last padded), of 2, none
def test_item_chunks_equal_one_call(monkeypatch, chunk_floats):
  users = jnp.arange(2.0)
  keys, mask = jnp.arange(7.0 * 3).reshape(7, 3), jnp.arange(7) % 3 > 0
  fn = lambda k, m: users[:, None, None] * k[None] + m[None, :, None]  # [B, c, 3]
  monkeypatch.setattr(attention, 'CHUNK_FLOATS', chunk_floats)
  np.testing.assert_array_equal(attention.over_item_chunks(fn, (keys, mask), 2), fn(keys, mask))


@pytest.mark.parametrize('name', ['hafr', 'pinet'])
def test_needs_annotations(name):
  with pytest.raises(ValueError, match=f'model.name={name} needs annotations'):
    mh.make(name=name, has_annotations=False)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['vecf', 'hafr', 'pinet'])
def test_one_epoch_run(name, tiny_data_dir, pretrained_encoder, tmp_path):
  """Trains, evaluates and reports like every model, on the tiny synthetic config in
  the paper's setting: VECF and HAFR read pre-extracted features, PiNet trains
  the pretrained ResNet18."""
  c = tiny.config(tiny_data_dir)
  c.model.name, c.train.epochs, c.model.encoder_init = name, 1, pretrained_encoder
  c.train.steps_per_call = tiny.END_TO_END_STEPS_PER_CALL
  res = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert res['model'] == name and os.path.exists(tmp_path / 'run' / 'results.json')
  assert res['encoder'] == ('resnet18' if name == 'pinet' else 'features')
  for split in ('valid', 'test'):
    assert 0.0 <= res[split]['all']['recall@10']['mean'] <= 1.0
  logged = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
  losses = [r for r in logged if r['kind'] == 'train']
  assert losses and all(np.isfinite(r['loss']) for r in losses)
  assert ('semantic' in losses[-1]) == (name == 'pinet')  # the extra loss is logged
