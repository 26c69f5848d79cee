"""The partitioned optimiser: Adam on the policy subtree, Adagrad elsewhere."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cierec_jax import optim
from cierec_jax import train_step
from tests import model_helpers as mh


def _train(**kw):
  return ml_collections.ConfigDict({**dict(lr=0.1, dqn_lr=0.003, decay_epochs=2, decay_rate=0.5,
                                           adagrad_initial_accumulator=0.0, weight_l2=0.0), **kw})


@pytest.mark.slow  # the optimiser's update over CIERec's whole tree compiled
def test_each_subtree_gets_its_own_optimiser():
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), mh.shapes(mh.make(), mh.batch())['params'])
  tx = optim.create(_train(), steps_per_epoch=3)
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  # A second, different gradient separates Adam (momentum) from Adagrad.
  updates, state = jax.jit(tx.update)(grads, state, params)
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    top = path[0].key
    expected = -0.003 if top == 'policy' else -0.1
    np.testing.assert_allclose(u, expected, rtol=1e-4, err_msg=str(path))
  grads2 = jax.tree.map(lambda p: jnp.full_like(p, -0.5), params)
  updates, state = jax.jit(tx.update)(grads2, state, params)
  # Adagrad: -lr * g / sqrt(sum g^2) = 0.1 * 0.5 / sqrt(0.5) ; Adam: m ~ 0, small step
  leaves = dict((jax.tree_util.keystr(p), u) for p, u in jax.tree_util.tree_leaves_with_path(updates))
  for k, u in leaves.items():
    if k.startswith("['policy']"):
      assert np.all(np.abs(np.asarray(u)) < 0.003)
    else:
      np.testing.assert_allclose(u, 0.1 * 0.5 / np.sqrt(0.5), rtol=1e-4)
  labels = optim.labels(params)
  assert set(jax.tree.leaves(labels['policy'])) == {optim.POLICIES}
  assert optim.POLICIES not in jax.tree.leaves({k: v for k, v in labels.items() if k != 'policy'})


def test_staircase_decay():
  sched = optim.staircase(0.1, steps_per_epoch=3, decay_epochs=2, decay_rate=0.5)
  np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 6, 11, 12)],
                             [0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-6)


def test_optax_adagrad_accumulator_setting():
  tx = optim.create(_train(adagrad_initial_accumulator=0.1), steps_per_epoch=1)
  params = {'w': jnp.ones(2)}
  u, _ = tx.update({'w': jnp.full(2, 0.01)}, tx.init(params), params)
  np.testing.assert_allclose(u['w'], -0.1 * 0.01 / np.sqrt(0.1 + 1e-4), rtol=1e-4)


def test_frozen_subtrees_do_not_move():
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), mh.shapes(mh.make(), mh.batch())['params'])
  tx = optim.create(_train(), steps_per_epoch=3, frozen=('encoder', 'item_embed'))
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    moved = bool(np.any(np.asarray(u) != 0))
    assert moved == (path[0].key not in ('encoder', 'item_embed')), jax.tree_util.keystr(path)


@pytest.mark.slow  # two optimisers' updates over CIERec's whole tree compiled
def test_weight_l2_adds_its_gradient_to_kernels_only():
  """train.weight_l2: Adagrad sees g + weight_l2 * W on every kernel (policy
  kernels are Adam's and untouched), g alone on embeddings and biases. With
  g = 0 only the penalty moves a parameter: a first Adagrad step of -lr."""
  params = jax.tree.map(lambda s: jnp.full(s.shape, 2.0, s.dtype), mh.shapes(mh.make(), mh.batch())['params'])
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = optim.create(_train(weight_l2=0.1), 3)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  kinds = set()
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    is_kernel = path[-1].key == 'kernel' and path[0].key != 'policy'
    kinds.add(is_kernel)
    np.testing.assert_allclose(u, -0.1 if is_kernel else 0.0, rtol=1e-5, err_msg=jax.tree_util.keystr(path))
  assert kinds == {True, False}
  off = optim.create(_train(), 3)
  assert not any(np.any(np.asarray(u)) for u in jax.tree.leaves(jax.jit(off.update)(zeros, off.init(params), params)[0]))


@pytest.mark.slow  # CIERec's train step lowered three times, optimiser updates compiled
def test_one_program_serves_every_rate_and_penalty():
  """The step takes optim.HYPERPARAMETERS as inputs: one program (the same
  lowered text) for every lr, dqn_lr and weight_l2 > 0 of a tuning grid. The
  optimiser gives the same numbers with the values as inputs as with them
  compiled in, and uses them: Adam's rate on the policies, Adagrad's on the
  rest, the penalty on kernels."""
  model = mh.make(modality='features')  # CIERec: Adagrad, the policies' Adam, kernels
  batch = mh.batch(8, modality='features')
  t = _train(weight_l2=0.1)
  state = train_step.create_state(model, optim.create(t, 3), batch, 0)
  step = jax.jit(train_step.make_train_step(model, functools.partial(optim.create, t, 3), 1e-4))
  grid = [optim.hyperparameters(_train(lr=lr, dqn_lr=dqn, weight_l2=w))
          for lr, dqn, w in ((0.1, 0.003, 0.1), (0.02, 0.01, 0.5), (1e-4, 1e-3, 1e-3))]
  assert len({step.lower(state, batch, jax.random.key(0), h).as_text() for h in grid}) == 1
  # Everything but the values is an argument: XLA would fold an update of constants.
  args = (jax.tree.map(lambda p: jnp.full_like(p, 0.5), state.params), state.opt_state, state.params)
  as_inputs = jax.jit(lambda h, *args: optim.create(t, 3, h).update(*args)[0])
  as_constants = jax.jit(lambda *args: optim.create(t, 3).update(*args)[0])
  for a, b in zip(jax.tree.leaves(as_inputs(optim.hyperparameters(t), *args)),
                  jax.tree.leaves(as_constants(*args))):
    np.testing.assert_array_equal(a, b)
  a, b = as_inputs(grid[0], *args), as_inputs(grid[1], *args)
  for top in ('policy', 'user_embed', 'encoder'):
    assert not any(np.allclose(x, y) for x, y in zip(jax.tree.leaves(a[top]), jax.tree.leaves(b[top]))), top


def test_global_norm_is_optax_tree_norm_small_leaves_in_one_reduction():
  rng = np.random.default_rng(0)
  big = train_step.NORM_OWN_REDUCTION
  tree = {'table': rng.normal(size=(big // 8, 8)), 'bias': rng.normal(size=(150, 1)),
          'conv': {'kernel': rng.normal(size=(3, 3, 4, 4)) * 1e-3, 'scale': np.float32(2.0)}}
  tree = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
  for t in (tree, {'table': tree['table']}, tree['conv']):
    np.testing.assert_allclose(train_step.global_norm(t), optax.tree.norm(t), rtol=1e-6)
  # The small leaves share one square and one reduction (each is a kernel on
  # XLA:CPU); the table is reduced where it is, never copied into a concatenation.
  eqns = jax.make_jaxpr(train_step.global_norm)(tree).eqns
  ops = [e.primitive.name for e in eqns]
  assert ops.count('reduce_sum') == 2 and ops.count('square') == 2, ops
  (cat,) = [e for e in eqns if e.primitive.name == 'concatenate']
  assert cat.outvars[0].aval.shape == (150 + 3 * 3 * 4 * 4 + 1,), cat
