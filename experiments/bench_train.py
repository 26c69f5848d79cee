"""Training triples/s and evaluation users/s, measured by real short runs.

  python -m experiments.bench_train [--epochs=3] [--only=movielens] [--repeats=1]
      [--set=train.steps_per_call=1]

Runs `train_and_evaluate` for each row of SETTINGS, each in its own process
(the device count is fixed when JAX starts), and reports the figures its
results.json records: train triples/s (time in train calls, without their
compilation, evaluation or checkpoints) and eval users/s (without
compilation). Next to them, the model's encoder forward+backward alone on one
step's items (2 x batch), and its share of the step (batch / triples/s).
With --repeats=N each row runs N times and shows the median rate with the
range: on a shared 2-core VM the same run's rate varies by up to 1.7x from one
process to the next, more than most changes one would measure.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import ml_collections

from cierec_jax import features as features_lib
from cierec_jax import train
from cierec_jax.data import load
from cierec_jax.data import sampler as sampler_lib
from experiments import yardstick

_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Epochs per run (calls that compile are not timed; '
                               'with one call per epoch the first epoch is).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'dataset.data_dir (default: the config default).')
_ONLY = flags.DEFINE_string('only', '', 'Run only the rows whose name matches this regex.')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Runs per row; more than one shows the median '
                                'rate and its range (min-max) over the runs.')
_SET = flags.DEFINE_multi_string('set', [], 'Extra config overrides for every run, e.g. '
                                 'train.steps_per_call=1.')

# (row, config file, model.name, devices, train.parallel)
SETTINGS = (
    ('MF, default', 'configs/default.py', 'mf', 1, 'jit'),
    ('VBPR, default (pre-extracted features)', 'configs/default.py', 'vbpr', 1, 'jit'),
    ('VBPR, default, end to end (pretrained ResNet18)', 'configs/default.py', 'vbpr', 1, 'jit',
     'model.encoder=resnet18'),
    ('CIERec(MF), default', 'configs/default.py', 'cierec', 1, 'jit'),
    ('MF, movielens', 'configs/movielens.py', 'mf', 1, 'jit'),
    ('VBPR, movielens', 'configs/movielens.py', 'vbpr', 1, 'jit'),
    ('CIERec(MF), movielens', 'configs/movielens.py', 'cierec', 1, 'jit'),
    ('CIERec(MF), default, 4 CPU devices, jit', 'configs/default.py', 'cierec', 4, 'jit'),
    ('CIERec(MF), default, 4 CPU devices, pmap', 'configs/default.py', 'cierec', 4, 'pmap'),
)


def run(config: str, model: str, devices: int, mode: str, overrides=()) -> dict:
  env = dict(os.environ)
  if devices > 1:
    env['JAX_PLATFORMS'] = 'cpu'
    env['JAX_NUM_CPU_DEVICES'] = str(devices)
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  with tempfile.TemporaryDirectory(prefix='bench_train_') as workdir:  # checkpoints: MBs a run
    args = [sys.executable, '-m', 'cierec_jax.main', f'--config={config}', f'--workdir={workdir}',
            f'--config.model.name={model}', f'--config.train.epochs={_EPOCHS.value}',
            f'--config.train.parallel={mode}'] + [f'--config.{s}' for s in (*overrides, *_SET.value)]
    if _DATA_DIR.value:
      args.append(f'--config.dataset.data_dir={_DATA_DIR.value}')
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(os.path.join(workdir, 'results.json')) as f:
      return json.load(f)


def encoder_seconds(results: dict) -> float | None:
  """The run's encoder forward+backward on one step's 2 x batch items (None: no encoder)."""
  c = ml_collections.ConfigDict(results['config'])
  data = load.load(c)
  model = train.build_model(c, data)
  if model.spec.encoder is None:
    return None
  data = features_lib.for_model(c, data, model.spec)
  batch = sampler_lib.with_item_inputs(
      next(sampler_lib.sampler_for(data, int(c.train.batch_size), 0).batches(0)), data)
  return yardstick.encoder_fwd_bwd_seconds(model, batch)


def main(_):
  if _REPEATS.value < 1:
    raise app.UsageError(f'--repeats={_REPEATS.value}: expected 1 or more')
  logging.set_verbosity(logging.WARNING)
  print(f'device: {yardstick.device_line()}')
  print('| setting | devices | train triples/s | eval users/s | encoder fwd+bwd s/step | '
        'encoder share of step | wall s |')
  print('|---|---|---|---|---|---|---|')
  for name, config, model, devices, mode, *overrides in SETTINGS:
    if _ONLY.value and not re.search(_ONLY.value, name):
      continue
    runs = [run(config, model, devices, mode, overrides) for _ in range(_REPEATS.value)]
    r, rates = runs[0], [x['train_examples_per_second'] for x in runs]
    rate = yardstick.median_rate(rates)
    enc = encoder_seconds(r)
    share = enc / (r['config']['train']['batch_size'] / rate) if enc and rate else None
    fmt = lambda v, f: '-' if v is None else format(v, f)
    d = r['devices']
    print(f"| {name} | {d['count']} x {d['kind']} | {yardstick.rate_cell(rates)} | "
          f"{yardstick.rate_cell([x['eval_users_per_second'] for x in runs])} | {fmt(enc, '.4f')} | "
          f"{fmt(share, '.0%')} | {statistics.median(x['wall_seconds'] for x in runs):.0f} |",
          flush=True)


if __name__ == '__main__':
  app.run(main)
