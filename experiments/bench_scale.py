"""The paper-scale synthetic dataset end to end: preparation, training speed, full evaluation.

  python -m experiments.bench_scale [--data_dir=DIR] [--mf_steps=512] [--cierec_steps=12]

For configs/synthetic_large.py (the paper's Table I size: 68,768 users,
45,630 items, about 1.1 million interactions, 2,736 elements, 32x32 images)
it prints:
- preparation: wall time and peak memory of `python -m cierec_jax.data` in a
  fresh data_dir (skipped, and said so, when DIR already holds the data;
  without --data_dir a temporary folder, removed at the end);
- train examples/s of MF and CIERec(MF) on 1 and 4 forced CPU devices, each
  in its own process (the device count is fixed when JAX starts), timed over
  the steps after the compiling one, with the input pipeline running;
- one full paper-protocol test evaluation (every user x (test positives +
  500 negatives) x 5 repeats) of each model on 1 device, compilation apart;
  CIERec on the first --cierec_eval_users users and extrapolated per user,
  so that the whole benchmark fits in 30 minutes on 2 CPU cores.
"""

import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax

_DATA_DIR = flags.DEFINE_string('data_dir', '', 'dataset.data_dir (default: a new temporary folder).')
_MF_STEPS = flags.DEFINE_integer('mf_steps', 512, 'Timed MF train steps (whole calls).')
_CIEREC_STEPS = flags.DEFINE_integer('cierec_steps', 12, 'Timed CIERec train steps.')
_CIEREC_EVAL_USERS = flags.DEFINE_integer(
    'cierec_eval_users', 4000, 'Test users CIERec is evaluated on (0: all); its full evaluation '
    'time is then extrapolated per user (a user-dependent gate per candidate makes it ~20x MF).')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: run one measurement, as model:devices:evaluate.')

CONFIG = 'configs/synthetic_large.py'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(data_dir: str, model: str):
  from configs import synthetic_large  # pylint: disable=g-import-not-at-top
  c = synthetic_large.get_config()
  c.dataset.data_dir = data_dir
  c.model.name = model
  return c


def prepare(data_dir: str) -> dict:
  """Prepares the dataset in a child process; its wall time and peak resident memory."""
  start = time.perf_counter()
  out = subprocess.run([sys.executable, '-m', 'cierec_jax.data', f'--config={CONFIG}',
                        f'--config.dataset.data_dir={data_dir}'], cwd=ROOT, check=True,
                       capture_output=True, text=True)
  return {'seconds': time.perf_counter() - start, 'stats': json.loads(out.stdout.splitlines()[-1]),
          'peak_gb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}


def measure(data_dir: str, model: str, steps: int, evaluate: bool, eval_users: int = 0) -> dict:
  """Runs in a worker: timed train calls (as train.py makes them: train.steps_per_call,
  item tables on the device), then optionally one full test evaluation."""
  from cierec_jax import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  from cierec_jax import optim, parallel, train, train_step  # pylint: disable=g-import-not-at-top
  from cierec_jax.data import load, sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  c = config(data_dir, model)
  start = time.perf_counter()
  data = load.load(c)
  out = {'load_seconds': time.perf_counter() - start, 'devices': jax.device_count()}
  net = train.build_model(c, data)
  t = c.train
  sampler = sampler_lib.sampler_for(data, int(t.batch_size), int(t.seed))
  runner, optimizer = train.make_runner(c, data, net, sampler.steps_per_epoch)
  hparams = optim.hyperparameters(t)
  example = sampler_lib.with_item_inputs(next(sampler.batches(0)), data)
  state = train_step.create_state(net, optimizer(), example, int(t.seed))
  per_call = train_step.steps_per_call(int(t.steps_per_call), net.spec, sampler.steps_per_epoch)
  items = train.device_items(runner, data, t)
  calls = itertools.chain.from_iterable(sampler.calls(e, 0, per_call) for e in itertools.count())
  calls = train.prefetch(train.host_item_inputs(calls, data, items))
  state = runner.put_state(state)
  key = jax.random.key(0)
  first, batches = next(calls)
  start = time.perf_counter()
  state, m = runner.step(state, runner.put_batch(batches), items, key, first, hparams)
  jax.block_until_ready(m)
  out['compile_seconds'] = time.perf_counter() - start
  done, start = 0, time.perf_counter()
  while done < steps:  # whole calls (an epoch's shorter last call would compile: skipped)
    first, batches = next(calls)
    if len(batches['weight']) < per_call:
      continue
    state, m = runner.step(state, runner.put_batch(batches), items, key, first, hparams)
    done += per_call
  jax.block_until_ready(m)
  out['train_examples_per_second'] = done * int(t.batch_size) / (time.perf_counter() - start)
  out['steps_per_call'] = per_call
  if evaluate:
    evaluator = eval_lib.Evaluator(net, data, c.eval, parallel.eval_placement(int(c.eval.batch_size)))
    variables = {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats else {})}
    full = evaluator.splits['test']
    if eval_users:  # the first users only; every user's batch has the same shapes and cost
      evaluator.splits['test'] = dataclasses.replace(
          full, **{f.name: getattr(full, f.name)[:eval_users] for f in dataclasses.fields(full)})
    cands = evaluator.splits['test']
    res = evaluator(variables, 'test')
    out['eval'] = {'users': res['users'], 'all_users': len(full.users), 'seconds': res['seconds'],
                   'full_seconds': res['seconds'] * len(full.users) / res['users'],
                   'compile_seconds': res['compile_seconds'],
                   'pairs': int(full.pos_mask.sum() + full.negatives.size),
                   'test_recall@10': res['all']['recall@10']['mean']}
  return out


def run_worker(data_dir: str, model: str, devices: int, evaluate: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(devices),
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  steps = _MF_STEPS.value if model == 'mf' else _CIEREC_STEPS.value
  out = subprocess.run([sys.executable, '-m', 'experiments.bench_scale', f'--data_dir={data_dir}',
                        f'--worker={model}:{devices}:{int(evaluate)}', f'--mf_steps={steps}',
                        f'--cierec_steps={steps}', f'--cierec_eval_users={_CIEREC_EVAL_USERS.value}'],
                       cwd=ROOT, env=env, check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.splitlines()[-1])


def main(_):
  logging.set_verbosity(logging.WARNING)
  if _WORKER.value:
    model, devices, evaluate = _WORKER.value.split(':')
    steps = _MF_STEPS.value if model == 'mf' else _CIEREC_STEPS.value
    users = _CIEREC_EVAL_USERS.value if model == 'cierec' else 0
    print(json.dumps(measure(_DATA_DIR.value, model, steps, bool(int(evaluate)), users)), flush=True)
    return
  if _DATA_DIR.value:
    benchmark(_DATA_DIR.value)
    return
  with tempfile.TemporaryDirectory(prefix='bench_scale_') as data_dir:  # GBs: removed at the end
    benchmark(data_dir)


def benchmark(data_dir: str):
  """Prepares the dataset in data_dir unless it is there, then prints the tables."""
  start = time.perf_counter()
  from cierec_jax.data import load  # pylint: disable=g-import-not-at-top
  if load.is_prepared(config(data_dir, 'mf')):
    print(f'preparation: skipped, {data_dir} already holds the dataset')
  else:
    p = prepare(data_dir)
    s = p['stats']
    print(f"preparation: {p['seconds']:.0f} s wall, peak resident memory {p['peak_gb']:.2f} GB")
    print(f"dataset: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions, "
          f"{s['elements']:,} elements, sparsity {100 * s['sparsity']:.2f}%, train {s['train']:,}, "
          f"cold items {s['cold_items']:,}")
  disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data_dir) for f in fs)
  print(f'prepared size on disk: {disk / 2**30:.2f} GB')
  print('\n| model | devices | load s | compile s | steps per call | train examples/s |')
  print('|---|---|---|---|---|---|')
  evaluations = {}
  for model in ('mf', 'cierec'):
    for devices in (1, 4):
      r = run_worker(data_dir, model, devices, evaluate=devices == 1)
      print(f"| {model} | {devices} forced CPU | {r['load_seconds']:.0f} | {r['compile_seconds']:.1f} | "
            f"{r['steps_per_call']} | {r['train_examples_per_second']:,.0f} |", flush=True)
      if 'eval' in r:
        evaluations[model] = r['eval']
  print('\nOne full paper-protocol test evaluation (1 device; every test user x (positives + '
        '500 negatives) x 5 repeats):\n')
  print('| model | users timed | of | scored pairs (all users) | seconds timed | full evaluation s | '
        'compile s | users/s |')
  print('|---|---|---|---|---|---|---|---|')
  for model, e in evaluations.items():
    full = f"{e['full_seconds']:.0f}" + (' (per-user extrapolation)' if e['users'] < e['all_users'] else '')
    print(f"| {model} | {e['users']:,} | {e['all_users']:,} | {e['pairs']:,} | {e['seconds']:.0f} | {full} | "
          f"{e['compile_seconds']:.1f} | {e['users'] / e['seconds']:,.0f} |")
  print(f'\nbench_scale total: {time.perf_counter() - start:.0f} s on {os.cpu_count()} CPU cores')


if __name__ == '__main__':
  app.run(main)
