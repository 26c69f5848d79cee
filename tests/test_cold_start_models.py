"""AMF, AMR, DropoutNet and CLCRec: each defining computation against numpy,
and scoring = training score. Feature-modality items keep these fast."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cierec_jax import optim
from cierec_jax import train_step
from cierec_jax.models import dropoutnet
from cierec_jax.models import registry
from configs import default
from tests import model_helpers as mh

NAMES = ('amf', 'amr', 'dropoutnet', 'clcrec')
SMALL = dict(tower_dims=(16, 8))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _bpr(diff):
  return np.logaddexp(0.0, -diff)


def _batch():
  """Features batch with a repeated user, an item that is a positive in one
  triple and a negative in another, a repeated positive and a filler row."""
  b = mh.batch(6, modality='features', seed=1)
  b['user'] = jnp.array([0, 3, 0, 5, 2, 6], jnp.int32)
  b['pos'] = jnp.array([1, 4, 7, 1, 9, 2], jnp.int32)
  b['neg'] = jnp.array([7, 0, 5, 3, 10, 8], jnp.int32)
  b['weight'] = jnp.array([1, 1, 1, 1, 1, 0], jnp.float32)
  return b


def _random_variables(model, batch, scale, seed=0):
  """Variables of the model's shapes, drawn at random (no init to compile):
  params ~ N(0, scale^2), BatchNorm means ~ N(0, 1) and variances in [1, 2],
  cold flags 0."""
  rng = np.random.default_rng(seed)
  draw = lambda path, x: jnp.asarray(
      np.zeros(x.shape) if path[-1].key == 'cold' else
      1.0 + rng.random(x.shape) if path[-1].key == 'var' else
      rng.normal(size=x.shape) * (1.0 if path[-1].key == 'mean' else scale), x.dtype)
  return jax.tree_util.tree_map_with_path(draw, mh.shapes(model, batch))


def _with_cold(variables, cold):
  params = dict(variables['params'], cold=jnp.asarray(cold, jnp.float32))
  return {**variables, 'params': params}


def _apply(model, variables, batch, seed=0):
  """The training-mode outputs, as numpy (jit: one compilation, no op-by-op dispatch)."""
  fn = jax.jit(lambda v, b, k: model.apply(v, b, None, train=True, mutable=['batch_stats'],
                                           rngs={'dropout': k})[0])
  return jax.tree.map(np.asarray, fn(variables, batch, jax.random.key(seed)))


def _table_perturbation(ids, grads, eps):
  """numpy APR: sum the lookups' gradients per table row, L2-normalise each row, scale by eps."""
  table = {}
  for i, g in zip(ids, grads):
    table[int(i)] = table.get(int(i), 0.0) + g
  norm = lambda g: g / np.linalg.norm(g) if np.linalg.norm(g) > 0 else g
  return np.stack([eps * norm(table[int(i)]) for i in ids])


def test_amf_perturbs_embeddings_along_the_normalised_bpr_gradient():
  eps, weight = 0.3, 0.7
  model = mh.make(modality='features', name='amf', adv_epsilon=eps, adv_weight=weight)
  batch = _batch()
  variables = _random_variables(model, batch, 0.5)  # trained-looking: non-zero biases
  out = _apply(model, variables, batch)
  p = np.asarray(variables['params']['user_embed']['embedding'])
  q = np.asarray(variables['params']['item_embed']['embedding'])
  bu = np.asarray(variables['params']['user_bias']['embedding'])[:, 0]
  bi = np.asarray(variables['params']['item_bias']['embedding'])[:, 0]
  alpha = float(variables['params']['alpha'])
  u, i, j, w = (np.asarray(batch[k]) for k in ('user', 'pos', 'neg', 'weight'))
  score = lambda pu, qi, uu, ii: alpha + bu[uu] + bi[ii] + np.sum(pu * qi, -1)
  diff = score(p[u], q[i], u, i) - score(p[u], q[j], u, j)
  s = (w * _sigmoid(-diff))[:, None]  # d(-sum w log sigmoid(diff)) / d diff = -w sigmoid(-diff)
  d_user = _table_perturbation(u, -s * (q[i] - q[j]), eps)
  d_items = _table_perturbation(np.concatenate([i, j]), np.concatenate([-s * p[u], s * p[u]]), eps)
  (got_user,), (got_pos, got_neg) = out['deltas']
  np.testing.assert_allclose(got_user, d_user, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.concatenate([got_pos, got_neg]), d_items, rtol=1e-4, atol=1e-6)
  real = w > 0
  np.testing.assert_allclose(np.linalg.norm(got_user[real], axis=-1), eps, rtol=1e-5)
  assert np.all(got_user[~real & ~np.isin(u, u[real])] == 0)  # a filler row steers nothing
  adv = score(p[u] + d_user, q[i] + d_items[:6], u, i) - score(p[u] + d_user, q[j] + d_items[6:], u, j)
  np.testing.assert_allclose(out['losses']['adversarial'], weight * _bpr(adv), rtol=1e-5)
  assert np.sum(w * _bpr(adv)) > np.sum(w * _bpr(diff))  # an ascent direction of the batch loss


def test_amr_perturbs_item_features_along_the_normalised_bpr_gradient():
  eps = 0.4
  model = mh.make(modality='features', name='amr', adv_epsilon=eps, adv_weight=1.0)
  batch = _batch()
  variables = _random_variables(model, batch, 0.3, seed=1)
  out = _apply(model, variables, batch)
  params = variables['params']
  kernel = np.asarray(params['vbpr_projection']['kernel'])  # [D, d]
  bias = np.asarray(params['vbpr_projection']['bias'])
  a = np.asarray(params['user_content']['embedding'])[np.asarray(batch['user'])] + np.asarray(
      params['content_bias'])
  e_pos, e_neg = (np.asarray(model.apply(variables, batch[k], False, method='encode'))
                  for k in ('pos_content', 'neg_content'))
  w = np.asarray(batch['weight'])
  diff = out['pos'] - out['neg']
  g = (w * _sigmoid(-diff))[:, None] * (a @ kernel.T)  # d BPR / d e_neg; the positive's is -g
  ids = np.concatenate([np.asarray(batch['pos']), np.asarray(batch['neg'])])
  want = _table_perturbation(ids, np.concatenate([-g, g]), eps)
  ((got_pos, got_neg),) = out['deltas']
  np.testing.assert_allclose(np.concatenate([got_pos, got_neg]), want, rtol=1e-4, atol=1e-6)
  # VBPR's content term recomputed at the perturbed features.
  content = lambda e: np.sum(a * (e @ kernel + bias), -1)
  adv = diff + (content(e_pos + got_pos) - content(e_pos)) - (content(e_neg + got_neg) - content(e_neg))
  np.testing.assert_allclose(out['losses']['adversarial'], _bpr(adv), rtol=1e-4)


def test_preference_dropout_zeroes_whole_rows_at_the_rate():
  prefs = jnp.asarray(np.random.default_rng(0).normal(size=(4000, 5)) + 3.0, jnp.float32)
  out = np.asarray(dropoutnet.preference_dropout(jax.random.key(0), prefs, 0.3))
  dropped = np.all(out == 0, axis=1)
  np.testing.assert_array_equal(out[~dropped], np.asarray(prefs)[~dropped])  # kept rows unscaled
  assert abs(dropped.mean() - 0.3) < 3 * np.sqrt(0.3 * 0.7 / 4000)
  assert not np.any(np.all(np.asarray(dropoutnet.preference_dropout(jax.random.key(0), prefs, 0.0)) == 0, 1))


def test_standardize_matches_numpy():
  table = np.random.default_rng(2).normal(size=(50, 3)) * np.array([1.0, 0.1, 0.0]) + 2.0
  table[0, 0] = 40.0  # clipped at 5 standard deviations
  want = np.clip((table - table.mean(0)) / np.maximum(table.std(0), 1e-8), -5, 5)
  got = dropoutnet.standardize(jnp.asarray(table, jnp.float32), jnp.asarray(table, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert np.asarray(got)[0, 0] == 5.0


def test_dropoutnet_regresses_on_the_mf_scores_and_zeroes_cold_preferences():
  model = mh.make(modality='features', name='dropoutnet', dropout_rate=0.5, **SMALL)
  batch = _batch()
  variables = _random_variables(model, batch, 0.3)
  params = variables['params']
  p, q = np.asarray(params['user_embed']['embedding']), np.asarray(params['item_embed']['embedding'])
  bi = np.asarray(params['item_bias']['embedding'])[:, 0]
  out = _apply(model, variables, batch)
  u, i, j = (np.asarray(batch[k]) for k in ('user', 'pos', 'neg'))
  t_pos, t_neg = np.sum(p[u] * q[i], -1) + bi[i], np.sum(p[u] * q[j], -1) + bi[j]
  np.testing.assert_allclose(out['losses']['regression'],
                             0.5 * ((out['pos'] - t_pos) ** 2 + (out['neg'] - t_neg) ** 2), rtol=1e-5)
  # The preference input is dropped at random in training: the loss depends on the draw.
  assert not np.allclose(out['losses']['regression'], _apply(model, variables, batch, 1)['losses']['regression'])
  # A cold item's tower output ignores its preference vector; a warm item's does not.
  cold = np.isin(np.arange(mh.I), [1, 4])
  e = jnp.asarray(np.random.default_rng(3).normal(size=(mh.I, 16)), jnp.float32)
  table = jax.jit(lambda v: model.apply(v, e, None, None, method='item_table')['v'])
  moved = jax.tree.map(lambda x: x, variables)
  moved['params']['item_embed']['embedding'] = params['item_embed']['embedding'].at[
      jnp.array([1, 2])].add(1.0)
  before, after = (np.asarray(table(_with_cold(v, cold))) for v in (variables, moved))
  np.testing.assert_allclose(after[[1, 4]], before[[1, 4]], rtol=1e-6)
  assert np.abs(after[2] - before[2]).max() > 1e-3


def test_dropoutnet_towers_start_as_the_authors_do():
  """Every tower layer starts from a truncated normal of std 0.01 with zero
  bias (the authors' code), so the towers' dot product starts near 0."""
  model = mh.make(modality='features', name='dropoutnet', **SMALL)
  params = mh.init(model, _batch())['params']
  for tower in ('user_tower', 'item_tower'):
    for name, layer in params[tower].items():
      if name.startswith('Dense'):
        k = np.asarray(layer['kernel'])
        assert 0.006 < k.std() < 0.011 and np.abs(k).max() <= 0.02 + 1e-7, (tower, name, k.std())
        assert not np.asarray(layer['bias']).any()


def _info_nce(anchors, cands, items, pos, w, tau):
  """numpy InfoNCE with in-batch candidates; filler columns and other copies of
  the anchor's positive item masked."""
  b = len(pos)
  logits = anchors @ cands.T / tau
  out = []
  for r in range(b):
    keep = (np.concatenate([w, w]) > 0) & (items != pos[r])
    keep[r] = True
    out.append(np.logaddexp.reduce(logits[r, keep]) - logits[r, r])
  return np.array(out)


@pytest.mark.parametrize('swap', [0.0, 1.0])
def test_clcrec_info_nce_losses(swap):
  tau, lam = 0.7, 0.3
  model = mh.make(modality='features', name='clcrec', temperature=tau, contrast_weight=lam,
                  content_sample_rate=swap)
  batch = _batch()
  cold = np.isin(np.arange(mh.I), [1, 5])
  variables = _with_cold(_random_variables(model, batch, 0.3), cold)
  out = _apply(model, variables, batch)
  params = variables['params']
  u, i, j, w = (np.asarray(batch[k]) for k in ('user', 'pos', 'neg', 'weight'))
  items = np.concatenate([i, j])
  p = np.asarray(params['user_embed']['embedding'])[u]
  q = np.asarray(params['item_embed']['embedding'])[items]
  both = lambda k: jnp.concatenate([batch[f'pos_{k}'], batch[f'neg_{k}']])
  c = np.asarray(jax.jit(lambda v: model.apply(
      v, model.apply(v, both('content'), False, method='encode'), both('elements'), both('lengths'),
      method='content'))(variables))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  np.testing.assert_allclose(out['losses']['item_content'],
                             lam * _info_nce(unit(q[:6]), unit(c), items, i, w, tau), rtol=1e-4)
  np.testing.assert_allclose(out['losses']['user_item'],
                             (1 - lam) * _info_nce(p, c if swap else q, items, i, w, tau), rtol=1e-4)
  # Cold items are scored from their content embedding, warm ones from q_i.
  scored = np.where(cold[items][:, None], c, q)
  np.testing.assert_allclose(np.concatenate([out['pos'], out['neg']]), np.sum(np.tile(p, (2, 1)) * scored, -1),
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('name', NAMES)
def test_scoring_function_equals_training_score(name):
  """score_candidates from the item table equals __call__(train=False), cold flags included."""
  model = mh.make(modality='features', name=name, **SMALL)
  contents, elements, lengths, users, cands, batch = mh.scoring_inputs('features')
  variables = _random_variables(model, batch, 0.3)  # BatchNorm statistics away from their init
  if 'cold' in variables['params']:
    variables = _with_cold(variables, np.isin(np.arange(mh.I), np.asarray(cands[:, :3])[::2]))

  @jax.jit
  def both(v):
    table = model.apply(v, model.apply(v, contents, False, method='encode'), elements, lengths,
                        method='item_table')
    return (model.apply(v, batch, None, train=False),
            model.apply(v, users, cands, table, method='score_candidates'))

  train_scores, scores = both(variables)
  assert scores.shape == (4, 6) and scores.dtype == jnp.float32
  np.testing.assert_allclose(scores[:, 0], train_scores['pos'], atol=1e-5)
  np.testing.assert_allclose(scores[:, 1], train_scores['neg'], atol=1e-5)


def test_cold_start_specs():
  specs = {n: mh.make(modality='features', name=n).spec for n in NAMES}
  assert specs['amf'].bpr and specs['amr'].bpr
  assert not specs['dropoutnet'].bpr and not specs['clcrec'].bpr
  assert specs['dropoutnet'].dataset_arrays == specs['clcrec'].dataset_arrays == ('cold',)
  assert set(specs['dropoutnet'].frozen) == {'user_embed', 'item_embed', 'item_bias', 'cold'}
  assert specs['clcrec'].reads_annotations and not specs['amr'].reads_annotations
  # The adversarial models keep their base's parameters exactly (init_from copies them all).
  tree = lambda n: jax.tree.map(lambda x: x.shape, mh.shapes(mh.make(modality='features', name=n),
                                                             _batch())['params'])
  assert tree('amf') == tree('mf') and tree('amr') == tree('vbpr')
  with pytest.raises(ValueError, match='model.dropout_rate=1.0'):
    mh.make(name='dropoutnet', dropout_rate=1.0)
  with pytest.raises(ValueError, match='model.temperature=0'):
    mh.make(name='clcrec', temperature=0.0)


@pytest.mark.parametrize('name', ['amf', 'clcrec'])
def test_batch_wide_terms_match_one_device_under_pmap(name):
  """Under pmap each device holds 2 of the 8 rows; the adversary's per-row sums
  and the in-batch negatives still span the whole batch."""
  batch = mh.batch(8, modality='features', seed=4)
  batch['pos'] = batch['pos'].at[5].set(batch['neg'][0])  # a row shared across devices
  batch['weight'] = batch['weight'].at[7].set(0.0)
  one = mh.make(modality='features', name=name, content_sample_rate=0.0)
  variables = _random_variables(one, batch, 0.5)
  want = _apply(one, variables, batch)
  sharded = registry.create(mh.model_config(name=name, content_sample_rate=0.0), num_users=mh.U,
                               num_items=mh.I, num_elements=mh.E, modality='features',
                               has_annotations=True, axis_name='d')
  split = jax.tree.map(lambda x: x.reshape((4, 2) + x.shape[1:]), batch)
  got = jax.pmap(lambda v, b: sharded.apply(v, b, None, train=True, rngs={'dropout': jax.random.key(0)}),
                 axis_name='d', in_axes=(None, 0), devices=jax.devices()[:4])(variables, split)
  for k in want['losses']:
    np.testing.assert_allclose(np.asarray(got['losses'][k]).reshape(-1), want['losses'][k], rtol=1e-5,
                               atol=1e-6, err_msg=k)


@pytest.mark.slow  # CLCRec's train step compiled
def test_bpr_is_logged_but_not_trained_when_the_spec_says_so():
  model = mh.make(modality='features', name='clcrec')
  batch = _batch()
  t = default.get_config().train
  optimizer = lambda hparams: optim.create(t, 1, hparams, frozen=model.spec.frozen)
  step = train_step.make_train_step(model, optimizer, l2=0.01)
  m = jax.jit(lambda b, k, h: step(train_step.create_state(model, optimizer(h), b, 0), b, k, h)[1])(
      batch, jax.random.key(0), optim.hyperparameters(t))
  assert float(m['bpr']) > 0
  np.testing.assert_allclose(m['loss'], 0.01 * m['l2'] + m['item_content'] + m['user_item'], rtol=1e-6)
