"""Training examples/s and evaluation users/s, measured by real short runs.

  python -m experiments.bench_train [--epochs=1] [--only=VBPR]

Runs `train_and_evaluate` for the default and the movielens configs on 1
device, then the default config with jit and with pmap on 4 forced CPU
devices, then VBPR end to end (ResNet18 from the pretrained encoder) and on
pre-extracted features. Each setting runs in its own process (the device
count is fixed when JAX starts) and reports the figures its results.json
records. `--only=VBPR` runs the settings whose name contains that text.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

_EPOCHS = flags.DEFINE_integer('epochs', 1, 'Epochs per measured run.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'dataset.data_dir (default: the config default).')
_ONLY = flags.DEFINE_string('only', '', 'Run only the settings whose name contains this text.')

# (name, config, devices, parallel mode, config overrides...)
SETTINGS = (('default, 1 device, jit', 'configs/default.py', 1, 'jit'),
            ('movielens, 1 device, jit', 'configs/movielens.py', 1, 'jit'),
            ('default, 4 CPU devices, jit', 'configs/default.py', 4, 'jit'),
            ('default, 4 CPU devices, pmap', 'configs/default.py', 4, 'pmap'),
            ('VBPR end to end, 1 device, jit', 'configs/default.py', 1, 'jit', 'model.name=vbpr',
             'model.encoder=resnet18'),
            ('VBPR on pre-extracted features, 1 device, jit', 'configs/default.py', 1, 'jit',
             'model.name=vbpr', 'model.encoder=features'))


def run(config: str, devices: int, mode: str, epochs: int, data_dir: str, overrides=()) -> dict:
  workdir = tempfile.mkdtemp(prefix='bench_train_')
  env = dict(os.environ)
  if devices > 1:
    env['JAX_PLATFORMS'] = 'cpu'
    env['JAX_NUM_CPU_DEVICES'] = str(devices)
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  args = [sys.executable, '-m', 'cierec_jax.main', f'--config={config}', f'--workdir={workdir}',
          f'--config.train.epochs={epochs}', f'--config.train.parallel={mode}',
          *(f'--config.{o}' for o in overrides)]
  if data_dir:
    args.append(f'--config.dataset.data_dir={data_dir}')
  subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def main(_):
  print('| setting | device | train examples/s | eval users/s | wall s |')
  print('|---|---|---|---|---|')
  for name, config, devices, mode, *overrides in SETTINGS:
    if _ONLY.value not in name:
      continue
    r = run(config, devices, mode, _EPOCHS.value, _DATA_DIR.value, overrides)
    d = r['devices']
    print(f"| {name} | {d['count']} x {d['kind']} | {r['train_examples_per_second']:,.0f} | "
          f"{r['eval_users_per_second']:,.0f} | {r['wall_seconds']:.0f} |", flush=True)


if __name__ == '__main__':
  app.run(main)
