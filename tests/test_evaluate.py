"""The evaluator's two ways to score candidates give the same metrics."""

import jax
import numpy as np
import pytest

from cierec_jax import evaluate as eval_lib
from cierec_jax import train
from cierec_jax import train_step
from cierec_jax.data import load
from cierec_jax.data import sampler as sampler_lib
from tests import tiny

pytestmark = pytest.mark.slow  # each compiles a ResNet18 and an evaluation


def _initial_variables(model, data):
  batch = sampler_lib.with_item_inputs(next(iter(sampler_lib.sampler_for(data, 8, 0).batches(0))), data)
  return train_step.init_variables(model, jax.random.key(1), batch, None, train=True)


def test_scoring_every_item_equals_scoring_the_candidates(tmp_path):
  c = tiny.config(str(tmp_path / 'data'))
  data = load.load(c)
  model = train.build_model(c, data)
  variables = _initial_variables(model, data)
  direct = eval_lib.Evaluator(model, data, c.eval)
  every = eval_lib.Evaluator(model, data, c.eval)
  direct.score_all_items, every.score_all_items = False, True
  a, b = direct(variables, 'test'), every(variables, 'test')
  for subset in eval_lib.SUBSETS:
    for metric in ('recall@10', 'ndcg@10', 'recall@20', 'ndcg@20'):
      if a[subset][metric]['mean'] is None:  # a subset without users
        assert b[subset][metric] == a[subset][metric]
        continue
      np.testing.assert_allclose(b[subset][metric]['mean'], a[subset][metric]['mean'], atol=1e-6)
      np.testing.assert_allclose(b[subset][metric]['std'], a[subset][metric]['std'], atol=1e-6)
  assert a['all']['recall@10']['mean'] > 0  # the comparison is not between two empty results


def test_item_table_encodes_the_normalised_images(tmp_path):
  """The evaluator sends items as stored (uint8) and normalises them on the
  device: its table equals one built from the host's normalised images."""
  c = tiny.config(str(tmp_path / 'data'))
  data = load.load(c)
  model = train.build_model(c, data)
  assert data.items.modality == 'image' and model.spec.encoder is not None
  variables = _initial_variables(model, data)
  @jax.jit
  def reference_table(variables, content, elements, lengths):
    e = model.apply(variables, content, False, method='encode')
    return model.apply(variables, e, elements, lengths, method='item_table')
  want = reference_table(variables, data.items.content(np.arange(data.num_items)), data.item_elements,
                         data.item_lengths)
  got = eval_lib.Evaluator(model, data, c.eval).item_table(variables)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), got, want)
