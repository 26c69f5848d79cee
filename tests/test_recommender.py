"""The assembled model: parameter trees per flag, shapes, scoring = training score."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cierec_jax.models import attention
from cierec_jax.models import recommender
from tests import model_helpers as mh

NAMED = [dict(name='mf'), dict(name='vbpr'), dict(name='mf_image'), dict(name='mf_semantics'),
         dict(name='cierec', backbone='mf'), dict(name='cierec', backbone='vbpr')]
ENCODER_FREE = ('mf', 'mf_semantics')


def _slow_if_pixels(cases):
  """Marks the cases whose model runs a ResNet18 on pixels slow: each costs
  10-20 s of op-by-op compilation on CPU (make test-fast skips them, CI runs them)."""
  return [c if c['name'] in ENCODER_FREE or c.get('modality') == 'features'
          else pytest.param(c, marks=pytest.mark.slow) for c in cases]


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


BASE_OFF = dict(gr=False, pi=False, ta=False, ci=False)


def test_ci_adds_q_inference_and_semantics_to_mf_base():
  full = _tree(gr=False, pi=False, ta=False)
  base = _tree(**BASE_OFF)
  only_full, only_ablated, changed = _diff(full, base)
  assert {k.split('/')[0] for k in only_full} == {'item_embed', 'inference', 'semantic', 'fusion'}
  assert not only_ablated and not changed
  assert full['fusion/mlp_f/kernel'][0] == 3 * 8  # [q_i; v_i; s_i]


@pytest.mark.slow
@pytest.mark.parametrize('backbone, baseline', [('mf', 'mf_image'), ('vbpr', 'vbpr')])
def test_base_is_the_backbones_table2_model(backbone, baseline):
  """Table III's Base (CI, TA, GR, PI off) is MF(Image) / VBPR: the same
  parameters give the same scores, in training and in evaluation."""
  base, reference = mh.make(backbone=backbone, **BASE_OFF), mh.make(name=baseline)
  assert base.spec.name == baseline
  batch = mh.batch(5)
  variables = mh.init(reference, batch)
  assert _tree(backbone=backbone, **BASE_OFF) == _tree(name=baseline)
  for train in (True, False):
    a = base.apply(variables, batch, None, train=train, mutable=['batch_stats'])[0]
    b = reference.apply(variables, batch, None, train=train, mutable=['batch_stats'])[0]
    for k in ('pos', 'neg', 'reg'):
      np.testing.assert_array_equal(a[k], b[k])


def test_vbpr_backbone_adds_content_terms():
  only_vbpr, only_mf, changed = _diff(_tree(backbone='vbpr'), _tree())
  assert set(only_vbpr) == {'user_content/embedding', 'content_bias'} and not only_mf and not changed
  assert _tree(backbone='vbpr')['user_content/embedding'] == (mh.U, 16)  # a_u has c_i's size D


@pytest.mark.parametrize('overrides', _slow_if_pixels(NAMED), ids=lambda o: '-'.join(o.values()))
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
  variables = mh.shapes(model, batch)  # shapes are all this checks: traced, not compiled
  assert 'batch_stats' not in variables
  assert variables['params']['encoder']['Dense_0']['kernel'].shape == (10, 16)
  assert jax.eval_shape(lambda v: model.apply(v, batch, jnp.ones(2), train=True), variables)['pos'].shape == (3,)


# registry.EXTRA models on feature vectors (no ResNet to compile); VECF with
# fewer regions than features, some of them zero.
EXTRA = [dict(name='vecf', modality='features', vecf_max_regions=4),
         dict(name='hafr', modality='features'), dict(name='pinet', modality='features')]


@pytest.mark.slow  # a model's train step and scoring compiled per case
@pytest.mark.parametrize('overrides', NAMED + [dict(name='cierec', ta=False, gr=False)] + EXTRA,
                         ids=lambda o: '-'.join(str(v) for v in o.values()))
def test_scoring_function_equals_training_score(overrides, monkeypatch):
  """score_candidates on precomputed e equals the training forward (BN in inference mode)."""
  monkeypatch.setattr(attention, 'CHUNK_FLOATS', 1)  # candidate by candidate where a model chunks
  overrides = dict(overrides)
  modality = overrides.pop('modality', 'image')
  model = mh.make(modality=modality, **overrides)
  contents, elements, lengths, users, cands, batch = mh.scoring_inputs(modality)
  variables = mh.init(model, batch)
  # Move BatchNorm statistics away from their init so inference mode matters.
  _, state = model.apply(variables, batch, jnp.ones(2), train=True, mutable=['batch_stats'], rngs=mh.rngs(1))
  variables = {**variables, **state}
  train_scores = model.apply(variables, batch, jnp.ones(2), train=False)

  e = model.apply(variables, contents, False, method='encode')
  table = model.apply(variables, e, elements, lengths, method='item_table')
  scores = model.apply(variables, users, cands, table, method='score_candidates')
  assert scores.shape == (4, 6)
  if hasattr(model, 'score_all_items'):  # every item at once, the table broadcast
    every = model.apply(variables, users, table, method='score_all_items')
    assert every.shape == (4, len(contents))
    np.testing.assert_allclose(jnp.take_along_axis(every, cands, axis=1), scores, atol=1e-5)
  np.testing.assert_allclose(scores[:, 0], train_scores['pos'], atol=1e-5)
  np.testing.assert_allclose(scores[:, 1], train_scores['neg'], atol=1e-5)
  # every candidate column agrees with a training score of that pair
  for col in range(2, 6):
    b = dict(batch, pos=cands[:, col], pos_content=contents[cands[:, col]],
             pos_elements=elements[cands[:, col]], pos_lengths=lengths[cands[:, col]])
    np.testing.assert_allclose(scores[:, col], model.apply(variables, b, None, train=False)['pos'], atol=1e-5)


@pytest.mark.parametrize('overrides, message', [
    (dict(name='cierec', ci=False), 'model.pi=True, model.gr=True, model.ta=True needs model.ci=True'),
    (dict(name='cierec', ci=False, pi=False, ta=False), 'model.gr=True needs model.ci=True'),
    (dict(name='cierec', ci=False, pi=False, gr=False), r'model.ta=True needs model.ci=True: without CI '
     r'the model is the Base \(mf_image\)'),
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


@pytest.mark.slow
def test_annotation_dropout_withholds_annotations_in_training_only():
  batch = mh.batch(16)
  model = mh.make(gr=False, annotation_dropout=1.0)
  variables = mh.init(model, batch)
  withheld = dict(batch, pos_lengths=0 * batch['pos_lengths'], neg_lengths=0 * batch['neg_lengths'])
  run = lambda m, b, train: m.apply(variables, b, None, train=train, mutable=['batch_stats'],
                                    rngs={'dropout': jax.random.key(3)})[0]['pos']
  np.testing.assert_allclose(run(model, batch, True), run(model, withheld, True), atol=1e-6)
  np.testing.assert_array_equal(run(model, batch, False), run(mh.make(gr=False), batch, False))
  half = run(mh.make(gr=False, annotation_dropout=0.5), batch, True)
  kept, dropped = run(mh.make(gr=False), batch, True), run(model, withheld, True)
  same_as_kept = np.isclose(half, kept, atol=1e-6) & (batch['pos_lengths'] > 0)
  same_as_dropped = np.isclose(half, dropped, atol=1e-6) & (batch['pos_lengths'] > 0)
  assert same_as_kept.any() and same_as_dropped.any()


def test_embed_matches_flax_embed_in_value_gradient_and_parameters():
  from cierec_jax.models import embed
  ids = jnp.array([[3, 0, 7], [7, 7, 1]], jnp.int32)  # repeated ids: their gradients add up
  for rows in (10, 1):
    ids_r = ids % rows
    ours, theirs = embed.Embed(rows, 4), flax.linen.Embed(rows, 4)
    params = theirs.init(jax.random.key(0), ids_r)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), ids_r)) == jax.tree.map(jnp.shape, params)
    w = jax.random.normal(jax.random.key(1), ids_r.shape + (4,))
    loss = lambda m: lambda p: jnp.sum(w * m.apply(p, ids_r) ** 2)
    np.testing.assert_array_equal(ours.apply(params, ids_r), theirs.apply(params, ids_r))
    g_ours, g_theirs = jax.grad(loss(ours))(params), jax.grad(loss(theirs))(params)
    np.testing.assert_allclose(g_ours['params']['embedding'], g_theirs['params']['embedding'],
                               rtol=1e-6)
  with pytest.raises(ValueError, match='integers'):
    embed.Embed(10, 4).init(jax.random.key(0), jnp.zeros((2,), jnp.float32))
