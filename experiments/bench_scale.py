"""The paper-scale synthetic dataset end to end: preparation, training speed, full evaluation.

  python -m experiments.bench_scale [--data_dir=DIR] [--mf_steps=300] [--cierec_steps=12]

For configs/synthetic_large.py (the paper's Table I size: 68,768 users,
45,630 items, about 1.1 million interactions, 2,736 elements, 32x32 images)
it prints:
- preparation: wall time and peak memory of `python -m cierec_jax.data` in a
  fresh data_dir (skipped, and said so, when DIR already holds the data);
- train examples/s of MF and CIERec(MF) on 1 and 4 forced CPU devices, each
  in its own process (the device count is fixed when JAX starts), timed over
  the steps after the compiling one, with the input pipeline running;
- one full paper-protocol test evaluation (every user x (test positives +
  500 negatives) x 5 repeats) of each model on 1 device, compilation apart.
"""

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
_MF_STEPS = flags.DEFINE_integer('mf_steps', 300, 'Timed MF train steps.')
_CIEREC_STEPS = flags.DEFINE_integer('cierec_steps', 12, 'Timed CIERec train steps.')
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


def measure(data_dir: str, model: str, steps: int, evaluate: bool) -> dict:
  """Runs in a worker: timed train steps, then optionally one full test evaluation."""
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
  tx = optim.create(t, sampler.steps_per_epoch, frozen=net.spec.frozen)
  batches = train.prefetch(sampler_lib.with_item_inputs(b, data) for b in sampler.batches(0))
  first = next(batches)
  runner = parallel.JitRunner(train_step.make_train_step(net, tx, float(t.l2)), parallel.make_mesh())
  state = runner.put_state(train_step.create_state(net, tx, first, int(t.seed)))
  key = jax.random.key(0)
  start = time.perf_counter()
  state, m = runner.step(state, runner.put_batch(first), key)
  jax.block_until_ready(m)
  out['compile_seconds'] = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(steps):
    state, m = runner.step(state, runner.put_batch(next(batches)), jax.random.fold_in(key, i))
  jax.block_until_ready(m)
  out['train_examples_per_second'] = steps * int(t.batch_size) / (time.perf_counter() - start)
  if evaluate:
    evaluator = eval_lib.Evaluator(net, data, c.eval, parallel.eval_placement(int(c.eval.batch_size)))
    variables = {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats else {})}
    res = evaluator(variables, 'test')
    cands = evaluator.splits['test']
    out['eval'] = {'users': res['users'], 'seconds': res['seconds'],
                   'compile_seconds': res['compile_seconds'],
                   'pairs': int(cands.pos_mask.sum() + cands.negatives.size),
                   'test_recall@10': res['all']['recall@10']['mean']}
  return out


def run_worker(data_dir: str, model: str, devices: int, evaluate: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(devices),
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  steps = _MF_STEPS.value if model == 'mf' else _CIEREC_STEPS.value
  out = subprocess.run([sys.executable, '-m', 'experiments.bench_scale', f'--data_dir={data_dir}',
                        f'--worker={model}:{devices}:{int(evaluate)}', f'--mf_steps={steps}',
                        f'--cierec_steps={steps}'], cwd=ROOT, env=env, check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.splitlines()[-1])


def main(_):
  logging.set_verbosity(logging.WARNING)
  if _WORKER.value:
    model, devices, evaluate = _WORKER.value.split(':')
    steps = _MF_STEPS.value if model == 'mf' else _CIEREC_STEPS.value
    print(json.dumps(measure(_DATA_DIR.value, model, steps, bool(int(evaluate)))), flush=True)
    return
  data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix='bench_scale_')
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
  print('\n| model | devices | load s | compile s | train examples/s |')
  print('|---|---|---|---|---|')
  evaluations = {}
  for model in ('mf', 'cierec'):
    for devices in (1, 4):
      r = run_worker(data_dir, model, devices, evaluate=devices == 1)
      print(f"| {model} | {devices} forced CPU | {r['load_seconds']:.0f} | {r['compile_seconds']:.1f} | "
            f"{r['train_examples_per_second']:,.0f} |", flush=True)
      if 'eval' in r:
        evaluations[model] = r['eval']
  print('\nOne full paper-protocol test evaluation (1 device):\n')
  print('| model | users | scored pairs | seconds | compile s | users/s |')
  print('|---|---|---|---|---|---|')
  for model, e in evaluations.items():
    print(f"| {model} | {e['users']:,} | {e['pairs']:,} | {e['seconds']:.0f} | {e['compile_seconds']:.1f} | "
          f"{e['users'] / e['seconds']:,.0f} |")
  print(f'\nbench_scale total: {time.perf_counter() - start:.0f} s on {os.cpu_count()} CPU cores')


if __name__ == '__main__':
  app.run(main)
