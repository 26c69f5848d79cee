"""The divergence guard: the loss bound, non-finite states, and the probe that leaves the state alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cierec_jax import divergence
from cierec_jax import parallel


def test_bound_is_max_loss_or_a_multiple_of_the_initial_loss():
  g = divergence.Guard()
  assert g.bound == np.inf  # nothing measured yet
  g.check_loss(1, 0.7)
  assert g.initial_loss == 0.7 and g.bound == pytest.approx(700.0)
  g.check_loss(2, 699.0)
  with pytest.raises(divergence.DivergenceError, match=r'loss 701 at step 3 is above the bound 700 = 1000 x '
                                                       r'the initial loss \(train.max_loss=0\)'):
    g.check_loss(3, 701.0)
  g = divergence.Guard(max_loss=5.0, initial_loss=0.7)
  with pytest.raises(divergence.DivergenceError, match=r'loss 6 at step 9 is above train.max_loss=5'):
    g.check_loss(9, 6.0)


def test_non_finite_loss_names_the_step():
  with pytest.raises(divergence.DivergenceError, match=r'non-finite loss at step 4 \(epoch 1\)'):
    divergence.Guard().check_loss(4, float('nan'), context=' (epoch 1)')


def test_state_with_inf_is_refused_naming_the_leaf():
  state = {'params': {'a': jnp.ones(3), 'b': jnp.array([1.0, jnp.inf])}, 'count': jnp.int32(3)}
  assert divergence.non_finite_leaves(state) == ["['params']['b']"]
  with pytest.raises(divergence.DivergenceError,
                     match=r"state after step 7 holds NaN/inf in \['params'\]\['b'\]; not saved, "
                           r'the last checkpoint \(step 4\) is kept'):
    divergence.Guard(initial_loss=0.7).check_state(7, state, lambda: 0.7, last_saved=4)


def test_state_is_judged_by_its_probe_loss_once_per_step():
  """lr=1e30 leaves finite parameters whose loss is inf: the probe catches it."""
  calls = []
  state = {'params': jnp.full(3, 1e30)}

  def probe(loss):
    return lambda: calls.append(loss) or loss

  g = divergence.Guard(initial_loss=0.7)
  g.check_state(5, state, probe(0.6), last_saved=None)
  g.check_state(5, state, probe(0.6), last_saved=None)  # the best and epoch checkpoints share it
  assert calls == [0.6]
  with pytest.raises(divergence.DivergenceError, match=r'non-finite probe-batch loss of the state at step 6; '
                                                       r'not saved \(no checkpoint yet\)'):
    g.check_state(6, state, probe(float('inf')), last_saved=None)


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_probe_loss_leaves_the_donated_state_intact(mode):
  def call(state, batches, items, key, first_step, hparams):  # one step per call, as the runners expect
    del items, key, first_step, hparams
    return {'w': state['w'] * 2}, {'loss': (jnp.sum(state['w']) + jnp.sum(batches['x']) * 0)[None]}

  runner = parallel.PmapRunner(call) if mode == 'pmap' else parallel.JitRunner(call, parallel.make_mesh())
  batch = runner.put_batch({'x': np.ones((1, 4, 1), np.float32)})
  dstate, _ = runner.step(runner.put_state({'w': np.ones(3, np.float32)}), batch, None, jax.random.key(0), 0, {})
  assert divergence.probe_loss(runner, dstate, batch, None, jax.random.key(0), {}) == 6.0
  np.testing.assert_array_equal(runner.get_state(dstate)['w'], [2.0, 2.0, 2.0])  # not donated away


def _interval(*calls):
  """An _Interval holding consecutive calls of stacked step metrics (steps 1, 2, ...)."""
  from cierec_jax import train
  interval, step = train._Interval(), 0
  for loss in calls:
    m = {'loss': jnp.asarray(loss, jnp.float32), 'bpr': jnp.asarray(loss, jnp.float32) / 2,
         'action_v': jnp.arange(len(loss), dtype=jnp.int32)}
    for j in range(len(loss)):
      step += 1
      interval.add(step, 0, m, j, 10)
  return interval


def test_interval_averages_its_steps_across_calls_and_keeps_the_last_action():
  interval = _interval([1.0, 2.0], [3.0, 6.0, 8.0])
  record = interval.flush(10, divergence.Guard(), upto=4)
  assert record == {'kind': 'train', 'step': 4, 'epoch': 1, 'epoch_float': 0.4, 'examples': 40,
                    'loss': 3.0, 'bpr': 1.5, 'action_v': 1.0}
  assert interval.last_finite == {'step': 4, 'loss': 6.0, 'bpr': 3.0, 'action_v': 1.0}
  assert interval.flush(10, divergence.Guard(), upto=None)['loss'] == 8.0  # step 5 is left


@pytest.mark.parametrize('bad,step,last', [(float('nan'), 4, 3), (5000.0, 4, 3), (np.inf, 1, None)])
def test_interval_stops_at_the_first_bad_step_naming_the_last_finite_one(bad, step, last):
  losses = [[1.0, 2.0], [3.0, 6.0, 8.0]]
  flat = sum(losses, [])
  flat[step - 1] = bad
  interval, guard = _interval(flat[:2], flat[2:]), divergence.Guard()
  with pytest.raises(divergence.DivergenceError, match=rf'at step {step} ') as e:
    interval.flush(10, guard)
  assert (f"last finite metrics: {{'step': {last}," if last else 'last finite metrics: None') in str(e.value)
  assert guard.initial_loss == (None if step == 1 else 1.0) and interval.items == []
