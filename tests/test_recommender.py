"""The assembled model: parameter trees per flag, shapes, scoring = training score."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cierec_jax.models import recommender
from tests import model_helpers as mh

NAMED = [dict(name='mf'), dict(name='vbpr'), dict(name='mf_image'), dict(name='mf_semantics'),
         dict(name='cierec', backbone='mf'), dict(name='cierec', backbone='vbpr')]


def _tree(**overrides):
  model = mh.make(**overrides)
  params = mh.shapes(model, mh.batch())['params']
  return {'/'.join(k): v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}


def _diff(a, b):
  """(paths only in a, paths only in b, paths in both whose shape differs)."""
  return (sorted(set(a) - set(b)), sorted(set(b) - set(a)),
          sorted(k for k in set(a) & set(b) if a[k] != b[k]))


def test_gr_adds_exactly_the_policy_subtree():
  only_full, only_ablated, changed = _diff(_tree(), _tree(gr=False))
  assert only_full and all(k.startswith(recommender.POLICY + '/') for k in only_full)
  assert not only_ablated and not changed
  assert {k.split('/')[1] for k in only_full} == {'visual', 'semantic'}


def test_pi_adds_exactly_the_element_embeddings():
  only_full, only_ablated, changed = _diff(_tree(gr=False), _tree(gr=False, pi=False))
  assert only_full == ['semantic/elements/embedding'] and not only_ablated and not changed


def test_ta_swaps_only_the_gates():
  only_full, only_ablated, changed = _diff(_tree(gr=False, pi=False), _tree(gr=False, pi=False, ta=False))
  assert set(only_full) == {'visual/kernel_user', 'visual/kernel_item', 'visual/kernel_gate',
                            'visual/bias', 'visual/g_v', 'inference/g_s',
                            'inference/delta_s/kernel', 'inference/delta_s/bias'}
  assert set(only_ablated) == {'inference/kernel', 'inference/bias'}
  assert not changed


def test_ci_adds_inference_and_semantics():
  full = _tree(gr=False, pi=False, ta=False)
  base = _tree(gr=False, pi=False, ta=False, ci=False)
  only_full, only_ablated, changed = _diff(full, base)
  assert {k.split('/')[0] for k in only_full} == {'inference', 'semantic'}
  assert not only_ablated
  assert changed == ['fusion/mlp_f/kernel']  # three parts fused instead of two
  assert full['fusion/mlp_f/kernel'][0] == 3 * 8 and base['fusion/mlp_f/kernel'][0] == 2 * 8


def test_base_is_backbone_with_q_and_plain_visual():
  base = _tree(gr=False, pi=False, ta=False, ci=False)
  assert {k.split('/')[0] for k in base} == {'alpha', 'user_embed', 'user_bias', 'item_bias',
                                             'item_embed', 'encoder', 'visual', 'fusion'}


def test_vbpr_backbone_adds_content_terms():
  only_vbpr, only_mf, changed = _diff(_tree(backbone='vbpr'), _tree())
  assert set(only_vbpr) == {'user_content/embedding', 'content_bias'} and not only_mf and not changed
  assert _tree(backbone='vbpr')['user_content/embedding'] == (mh.U, 16)  # a_u has c_i's size D


@pytest.mark.parametrize('overrides', NAMED, ids=lambda o: '-'.join(o.values()))
@pytest.mark.parametrize('b', [1, 8])
def test_named_models_shapes_and_dtypes(overrides, b):
  model = mh.make(**overrides)
  batch = mh.batch(b)
  variables = mh.init(model, batch)
  out, state = model.apply(variables, batch, jnp.ones(2), train=True, mutable=['batch_stats'])
  for k in ('pos', 'neg', 'reg'):
    assert out[k].shape == (b,) and out[k].dtype == jnp.float32, k
  assert np.isfinite(np.asarray(out['pos'])).all()
  has_encoder = overrides['name'] not in ('mf', 'mf_semantics')
  assert ('batch_stats' in state) == has_encoder
  assert ('encoder' in variables['params']) == has_encoder


def test_features_encoder():
  model = mh.make(modality='features')
  batch = mh.batch(3, modality='features')
  variables = mh.init(model, batch)
  assert 'batch_stats' not in variables
  assert variables['params']['encoder']['Dense_0']['kernel'].shape == (10, 16)
  assert model.apply(variables, batch, jnp.ones(2), train=True)['pos'].shape == (3,)


@pytest.mark.parametrize('overrides', NAMED + [dict(name='cierec', ta=False, gr=False)],
                         ids=lambda o: '-'.join(str(v) for v in o.values()))
def test_scoring_function_equals_training_score(overrides):
  """score_candidates on precomputed e equals the training forward (BN in inference mode)."""
  model = mh.make(**overrides)
  rng = np.random.default_rng(5)
  contents = jnp.asarray(rng.normal(size=(mh.I, 16, 16, 3)), jnp.float32)
  lengths = jnp.asarray(rng.integers(0, mh.L + 1, mh.I), jnp.int32)
  elements = jnp.where(jnp.arange(mh.L)[None] < lengths[:, None],
                       jnp.asarray(rng.integers(1, mh.E, (mh.I, mh.L)), jnp.int32), 0)
  users = jnp.array([0, 3, 6, 2], jnp.int32)
  cands = jnp.asarray(rng.integers(0, mh.I, (4, 6)), jnp.int32)
  pos, neg = cands[:, 0], cands[:, 1]
  batch = {'user': users, 'pos': pos, 'neg': neg, 'pos_content': contents[pos],
           'neg_content': contents[neg], 'pos_elements': elements[pos], 'neg_elements': elements[neg],
           'pos_lengths': lengths[pos], 'neg_lengths': lengths[neg]}
  variables = mh.init(model, batch)
  # Move BatchNorm statistics away from their init so inference mode matters.
  _, state = model.apply(variables, batch, jnp.ones(2), train=True, mutable=['batch_stats'])
  variables = {**variables, **state}
  train_scores = model.apply(variables, batch, jnp.ones(2), train=False)

  e = model.apply(variables, contents, False, method='encode')
  table = model.apply(variables, e, elements, lengths, method='item_table')
  scores = model.apply(variables, users, cands, table, method='score_candidates')
  assert scores.shape == (4, 6)
  np.testing.assert_allclose(scores[:, 0], train_scores['pos'], atol=1e-5)
  np.testing.assert_allclose(scores[:, 1], train_scores['neg'], atol=1e-5)
  # every candidate column agrees with a training score of that pair
  for col in range(2, 6):
    b = dict(batch, pos=cands[:, col], pos_content=contents[cands[:, col]],
             pos_elements=elements[cands[:, col]], pos_lengths=lengths[cands[:, col]])
    np.testing.assert_allclose(scores[:, col], model.apply(variables, b, None, train=False)['pos'], atol=1e-5)


@pytest.mark.parametrize('overrides, message', [
    (dict(name='cierec', ci=False), 'model.pi=True needs model.ci=True'),
    (dict(name='cierec', ci=False, pi=False), 'model.gr=True needs model.ci=True'),
    (dict(name='knn'), "model.name='knn'"),
    (dict(backbone='bpr'), "model.backbone='bpr'"),
    (dict(encoder='features'), "model.encoder='features' on the dataset's image items reads features "
                               'pre-extracted by a pretrained encoder: set model.encoder_init'),
])
def test_impossible_combinations(overrides, message):
  with pytest.raises(ValueError, match=message):
    mh.make(**overrides)


def test_annotations_required():
  with pytest.raises(ValueError, match='mf_semantics needs annotations'):
    mh.make(has_annotations=False, name='mf_semantics')
  with pytest.raises(ValueError, match='model.pi=True needs annotations'):
    mh.make(has_annotations=False)
  mh.make(has_annotations=False, pi=False)
