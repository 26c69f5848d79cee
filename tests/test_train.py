"""The training program: resume, config refusal, outputs, parallel modes, the command line.

Divergence, bad configs and busy workdirs: tests/test_fault_matrix.py.
"""

import functools
import json
import os
import subprocess
import sys
import types

import flax
import jax
import numpy as np
import pytest

from cierec_jax import checkpoint as ckpt_lib
from cierec_jax import train
from tests import tiny

pytestmark = pytest.mark.slow


def _config(data_dir, **train_overrides):
  c = tiny.config(data_dir)
  c.train.epochs = 2
  c.train.log_every_steps = 1
  for k, v in train_overrides.items():
    setattr(c.train, k, v)
  return c


def _final_params(workdir):
  mgr = ckpt_lib.Checkpointer(workdir)
  step = mgr.latest_step()
  state = mgr.manager.restore(step, args=__import__('orbax.checkpoint').checkpoint.args.Composite(
      state=__import__('orbax.checkpoint').checkpoint.args.StandardRestore()))['state']
  mgr.close()
  return flax.traverse_util.flatten_dict(state['params'], sep='/')


def test_stopped_run_resumes_to_the_same_result(tmp_path):
  """Also checks the full run's outputs (_check_outputs), and the halted run's
  steps against 1 device and pmap (_check_parallel_modes_agree): the 4-device
  program is compiled once for the three.

  tiny.END_TO_END_STEPS_PER_CALL: one CIERec compile per mode instead of two
  or three (the test took 225 s alone, 321 s in the suite, on a slow day).
  Calls of several steps across a halt and a resume:
  test_steps_per_call_and_device_items_give_the_one_step_results."""
  data_dir = str(tmp_path / 'data')
  config = functools.partial(_config, data_dir, steps_per_call=tiny.END_TO_END_STEPS_PER_CALL)
  c = config()
  c.eval.dump = True  # the dump changes nothing the resumed run is compared on
  full = train.train_and_evaluate(c, str(tmp_path / 'full'))
  _check_outputs(tmp_path / 'full', full, c)
  steps = full['steps']
  halt = 3  # inside the first epoch, whose end the resumed run must still reach
  halted = train.train_and_evaluate(config(halt_after_steps=halt), str(tmp_path / 'cut'))
  assert halted == {'halted_at_step': halt}
  assert not os.path.exists(tmp_path / 'cut' / 'results.json')
  _check_parallel_modes_agree(config, tmp_path, halt, _final_params(str(tmp_path / 'cut')))
  resumed = train.train_and_evaluate(config(), str(tmp_path / 'cut'))
  untimed = lambda r: {k: v for k, v in r.items() if k not in ('seconds', 'users_per_second', 'compile_seconds')}
  assert untimed(resumed['test']) == untimed(full['test'])
  assert untimed(resumed['valid']) == untimed(full['valid'])
  a, b = _final_params(str(tmp_path / 'full')), _final_params(str(tmp_path / 'cut'))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  logged = [r for r in map(json.loads, open(tmp_path / 'cut' / 'metrics.jsonl')) if r['kind'] == 'train']
  steps_logged = [r['step'] for r in logged]
  assert len(steps_logged) == len(set(steps_logged)), 'a resumed run must not log a step twice'
  # Every step ends a record (log_every_steps=1), so every step measured its gradient norm.
  assert len(logged) == steps and all(np.isfinite(r['grad_norm']) and r['grad_norm'] > 0 for r in logged)

  # A model-shape change in the same workdir is refused, naming the field.
  c = _config(data_dir)
  c.model.embed_dim = 16
  with pytest.raises(ValueError, match=r'model.embed_dim: saved 8, now 16'):
    train.train_and_evaluate(c, str(tmp_path / 'cut'))


def _check_outputs(workdir, res, c):
  """A two-epoch CIERec run's files, results and metric dump (c.eval.dump)."""
  for f in ('config.json', 'metrics.jsonl', 'results.json', 'curves.png'):
    assert os.path.exists(workdir / f), f
  for key in ('dataset', 'wall_seconds', 'train_examples_per_second', 'eval_users_per_second', 'devices'):
    assert key in res, key
  assert res['devices']['count'] == jax.device_count()
  assert isinstance(res['devices']['huge_pages'], bool)  # its value: test_host_memory
  for subset in ('all', 'cold', 'warm', 'cold_item', 'warm_item'):
    assert set(res['test'][subset]) >= {'recall@10', 'ndcg@10', 'recall@20', 'ndcg@20'}
  # CIERec reads annotations: test (and valid) again with them withheld.
  assert res['test_withheld'] != res['test'] and 'valid_withheld' in res
  assert res['stopped_by'] == 'epochs' and res['epochs_trained'] == 2
  # The dump recomputes the reported test metrics independently (numpy only).
  from cierec_jax import metrics  # pylint: disable=g-import-not-at-top
  for subset in ('cold', 'cold_item'):
    per_repeat = []
    for rep in range(c.eval.repeats):
      z = np.load(workdir / 'dump' / 'test' / f'{subset}_repeat{rep}.npz')
      r, _, n = metrics.ranking_metrics(z['scores'], z['labels'], z['valid'], (10,))
      r, n = np.asarray(r), np.asarray(n)
      per_repeat.append(r[n > 0, 0].mean())
    np.testing.assert_allclose(np.mean(per_repeat), res['test'][subset]['recall@10']['mean'], rtol=1e-6)


def test_patience_stops_a_run_that_no_longer_improves(tmp_path):
  """lr ~ 0: valid R@10 never beats epoch 1, so patience 2 stops at epoch 3 of 6."""
  c = _config(str(tmp_path / 'data'), lr=1e-12, epochs=6, patience=2)
  c.model.name = 'mf'
  res = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert (res['stopped_by'], res['epochs_trained'], res['best_epoch']) == ('patience', 3, 1)
  valid_epochs = lambda: [r['epoch'] for r in map(json.loads, open(tmp_path / 'run' / 'metrics.jsonl'))
                          if r['kind'] == 'valid']
  assert valid_epochs() == [1, 2, 3]
  assert 'test_withheld' not in res  # MF reads no annotations
  # Running a stopped run again trains nothing more.
  again = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert again['epochs_trained'] == 3 and valid_epochs() == [1, 2, 3]


def _train_losses(workdir) -> np.ndarray:
  return np.array([r['loss'] for r in map(json.loads, open(workdir / 'metrics.jsonl'))
                   if r['kind'] == 'train'])


def _check_parallel_modes_agree(config, tmp_path, halt, want):
  """The first `halt` steps on 1 device (jit) and on 4 (pmap) against 4 (jit):
  `want`, the params of tmp_path/'cut', halted there. config(**train
  overrides): the runs' config.

  The modes differ only in float32 summation order (sharded reductions,
  all-reduces). Losses agree to rtol 1e-4. For parameters, Adagrad with a zero
  initial accumulator divides each coordinate's gradient by its own norm, so
  a coordinate whose gradient is a near-cancelling sum (|g| ~ 1e-5) turns a
  rounding difference into a visible fraction of a step: we allow 1% of one
  step (0.01 * lr) per coordinate, and require the typical (median)
  difference to be at rounding level (1e-6).
  """
  assert jax.device_count() == 4
  lr = config().train.lr
  for mode, devices in (('jit', jax.devices()[:1]), ('pmap', None)):
    workdir = tmp_path / f'{mode}-{len(devices or jax.devices())}'
    res = train.train_and_evaluate(config(halt_after_steps=halt, parallel=mode), str(workdir), devices)
    assert res == {'halted_at_step': halt}
    np.testing.assert_allclose(_train_losses(workdir), _train_losses(tmp_path / 'cut'), rtol=1e-4, err_msg=mode)
    params, diffs = _final_params(str(workdir)), []
    assert params.keys() == want.keys()
    for k in want:
      np.testing.assert_allclose(params[k], want[k], rtol=0, atol=0.01 * lr, err_msg=f'{mode} {k}')
      diffs.append(np.abs(np.asarray(params[k]) - np.asarray(want[k])).ravel())
    assert np.median(np.concatenate(diffs)) < 1e-6, mode


def test_main_cli(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  args = [sys.executable, '-m', 'cierec_jax.main', '--config=configs/default.py',
          f'--workdir={tmp_path / "run"}', f'--config.dataset.data_dir={tmp_path / "data"}',
          '--config.dataset.num_users=50', '--config.dataset.num_items=120',
          '--config.dataset.image_size=16', '--config.eval.num_negatives=30', '--config.eval.repeats=2',
          '--config.model.name=mf', '--config.train.epochs=1', '--config.train.batch_size=64']
  out = subprocess.run(args, cwd=root, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert '| mf |' in out.stdout and 'Cold R@10' in out.stdout
  assert ' ETA' in out.stdout
  bad = subprocess.run(args + ['--config.train.batchsize=3'], cwd=root, capture_output=True, text=True)
  assert bad.returncode != 0 and 'batchsize' in bad.stderr
  # A refused config: one line naming every bad field, status 1, no traceback.
  bad = subprocess.run(args + ['--config.train.lr=-1', '--config.train.epochs=0'], cwd=root,
                       capture_output=True, text=True)
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith(
      'error: invalid config (2 problems): train.epochs=0 (expected an integer >= 1); '
      'train.lr=-1.0 (expected a finite number > 0)'), bad.stderr


def test_steps_per_call_and_device_items_give_the_one_step_results(tmp_path):
  """MF: 4 steps per call with item inputs gathered on the device, halted
  inside a call's span and resumed mid-epoch, equals one step per call with
  host-gathered inputs (the path before train.steps_per_call)."""
  data_dir = str(tmp_path / 'data')

  def config(**overrides):
    c = _config(data_dir, log_every_steps=3, **overrides)
    c.model.name = 'mf'
    return c
  one = train.train_and_evaluate(config(steps_per_call=1, device_items_max_mb=0), str(tmp_path / 'one'))
  assert train.train_and_evaluate(config(steps_per_call=4, halt_after_steps=5),
                                  str(tmp_path / 'four')) == {'halted_at_step': 5}
  four = train.train_and_evaluate(config(steps_per_call=4), str(tmp_path / 'four'))
  for split in ('valid', 'test'):
    for subset in ('all', 'cold', 'warm'):
      for metric, v in one[split][subset].items():
        if isinstance(v, dict):  # recall@K, ndcg@K: {mean, std}; None on an empty subset
          got = four[split][subset][metric]['mean']
          if v['mean'] is None:
            assert got is None, f'{split} {subset} {metric}'
            continue
          np.testing.assert_allclose(got, v['mean'], atol=1e-4, err_msg=f'{split} {subset} {metric}')
  a, b = _final_params(str(tmp_path / 'one')), _final_params(str(tmp_path / 'four'))
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)
  records = lambda run: [r for r in map(json.loads, open(tmp_path / run / 'metrics.jsonl'))
                         if r['kind'] == 'train']
  # Each step is logged as without calls; the halt adds a record at step 5.
  four_logged, one_logged = records('four'), records('one')
  assert [r['step'] for r in four_logged] == sorted([r['step'] for r in one_logged] + [5])
  later = lambda rs, k='loss': [r[k] for r in rs if r['step'] > 6]  # same intervals again
  np.testing.assert_allclose(later(four_logged), later(one_logged), rtol=1e-4)
  # The gradient norm is measured at each record's last step (train.record_ends), and only there.
  for r in one_logged + four_logged:
    assert np.isfinite(r['grad_norm']) and r['grad_norm'] > 0, r
  np.testing.assert_allclose(later(four_logged, 'grad_norm'), later(one_logged, 'grad_norm'), rtol=1e-4)


def test_auto_steps_per_call_gives_image_models_calls_of_one_length():
  from cierec_jax import train_step  # pylint: disable=g-import-not-at-top
  image = types.SimpleNamespace(encoder='resnet18', conv_impl='auto')
  embedding = types.SimpleNamespace(encoder=None, conv_impl='auto')
  auto = lambda spec, spe: train_step.steps_per_call(0, spec, spe)
  assert [auto(image, spe) for spe in (30, 233, 40, 12, 3, 1, 0)] == [6, 8, 8, 6, 3, 1, 1]
  assert [auto(embedding, spe) for spe in (30, 233, 1000, 0)] == [30, 233, 256, 1]
  # XLA's own convolutions keep one step per call on CPU (tests run on CPU): their
  # gradients inside a loop run on XLA's naive kernel.
  assert auto(types.SimpleNamespace(encoder='resnet18', conv_impl='xla'), 30) == 1
  assert train_step.steps_per_call(5, image, 30) == 5
  with pytest.raises(ValueError, match='train.steps_per_call=-1'):
    train_step.steps_per_call(-1, image, 30)


def test_record_ends_every_log_interval_epoch_checkpoint_and_halt():
  c = _config('unused', log_every_steps=3, checkpoint_every_steps=5, halt_after_steps=11)
  ends = train.record_ends(c.train, 7)
  assert [s for s in range(1, 16) if ends(s)] == [3, 5, 6, 7, 9, 10, 11, 12, 14, 15]
  traced = jax.jit(jax.vmap(ends))(np.arange(1, 16))
  assert [s for s, e in zip(range(1, 16), traced) if e] == [3, 5, 6, 7, 9, 10, 11, 12, 14, 15]


def test_one_call_of_several_steps_equals_single_steps():
  """CIERec (features): the policies' state, their sampled actions and the
  dropout stream carry across the steps of one call as across calls."""
  from cierec_jax import optim, parallel as par, train_step  # pylint: disable=g-import-not-at-top
  from tests import model_helpers  # pylint: disable=g-import-not-at-top
  model = model_helpers.make(modality='features')
  batches = [model_helpers.batch(8, modality='features', seed=s) for s in range(4)]
  t = tiny.config('unused').train
  optimizer, hparams = functools.partial(optim.create, t, 4), optim.hyperparameters(t)
  state = jax.device_get(train_step.create_state(model, optimizer(), batches[0], 0))  # host: calls donate it
  # Two steps per loop iteration: the state carries across unrolled steps (as
  # encoder-free models' calls run, train_step.scan_unroll) and across iterations.
  # (The test took 29 s with four unrolled steps, 24 s with two.)
  assert train_step.scan_unroll(model.spec) == 1
  assert train_step.scan_unroll(model_helpers.make(modality='features', name='mf').spec) == 4
  runner = par.JitRunner(train_step.scan_steps(train_step.make_train_step(model, optimizer, 1e-4), unroll=2),
                         par.make_mesh(jax.devices()[:1]))
  stack = lambda bs: runner.put_batch({k: np.stack([b[k] for b in bs]) for k in bs[0]})
  key = jax.random.key(3)
  single, losses = runner.put_state(state), []
  for i, b in enumerate(batches):
    single, m = runner.step(single, stack([b]), None, key, 10 + i, hparams)
    losses.append(m)
  calls, m4 = runner.step(runner.put_state(state), stack(batches), None, key, 10, hparams)
  for k in ('loss', 'action_v', 'action_s', 'dqn'):
    np.testing.assert_allclose(m4[k], np.concatenate([m[k] for m in losses]), rtol=1e-5, err_msg=k)
  flat = lambda s: flax.traverse_util.flatten_dict(jax.device_get(s.params), sep='/')
  for k, v in flat(single).items():
    np.testing.assert_allclose(flat(calls)[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
  np.testing.assert_allclose(calls.policy_state, single.policy_state, rtol=1e-5)
  # One step per call (image models) runs without a loop: XLA:CPU runs convolutions
  # inside a loop body ~13x slower.
  call = train_step.scan_steps(lambda st, b, k, h: (st + b['x'].sum(), {'x': b['x'].sum()}))
  loops = lambda n: {e.primitive.name for e in jax.make_jaxpr(call)(
      0.0, {'x': np.ones((n, 3), np.float32)}, None, key, 0, {}).eqns}
  assert 'scan' not in loops(1) and 'scan' in loops(2)
