"""A real 2-process run on loopback: halted mid-epoch, resumed, equal to 1 process x 2 devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cierec_jax import evaluate as eval_lib
from cierec_jax import parallel
from cierec_jax import train
from configs import default
from tests import tiny

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds per launch of both processes; a hung collective cannot stall the suite


def _config(data_dir):
  c = tiny.config(data_dir)
  c.model.name = 'mf'
  c.train.epochs = 1
  c.train.log_every_steps = 1
  c.train.batch_shards = 2  # fixed shards: the sum order does not depend on the process layout
  c.eval.dump = True
  return c


def _flags(c) -> list:
  """The command-line overrides that turn configs/default.py into config c."""
  base, flags = default.get_config(), []
  for section in ('dataset', 'model', 'train', 'eval'):
    for k, v in c[section].items():
      if v != base[section][k]:
        flags.append(f'--config.{section}.{k}={v}')
  return flags


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(c, workdir, extra=()):
  """Runs both processes (1 CPU device each) to the end; returns their stdouts."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='1',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  procs = []
  for pid in range(2):
    args = [sys.executable, '-m', 'cierec_jax.main', '--config=configs/default.py',
            f'--workdir={workdir}', *_flags(c), '--config.train.distributed=True',
            f'--config.train.coordinator_address=localhost:{port}',
            '--config.train.num_processes=2', f'--config.train.process_id={pid}', *extra]
    procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=TIMEOUT)
      assert p.returncode == 0, err[-3000:]
      outs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return outs


def test_two_processes_equal_one_process_with_two_devices(tiny_data, tmp_path):
  data_dir = os.path.dirname(tiny_data.path)
  c = _config(data_dir)
  one = train.train_and_evaluate(c, str(tmp_path / 'one'), devices=jax.devices()[:2])

  workdir = tmp_path / 'two'
  halt = one['steps'] // 2
  outs = _launch(c, workdir, [f'--config.train.halt_after_steps={halt}'])
  assert not os.path.exists(workdir / 'results.json')
  outs += _launch(c, workdir)

  with open(workdir / 'results.json') as f:
    two = json.load(f)
  assert two['devices']['process_count'] == 2 and two['devices']['count'] == 2
  untimed = lambda r: {k: v for k, v in r.items() if k not in ('seconds', 'users_per_second',
                                                                'compile_seconds')}
  assert untimed(two['test']) == untimed(one['test'])
  assert untimed(two['valid']) == untimed(one['valid'])

  # Each line and file once: only process 0 writes and prints.
  with open(workdir / 'metrics.jsonl') as f:
    kinds = [(r['kind'], r['step']) for r in map(json.loads, f)]
  assert len(kinds) == len(set(kinds)), kinds
  assert [k for k, _ in kinds].count('valid') == 1 and [k for k, _ in kinds].count('test') == 1
  assert {f for f in os.listdir(workdir) if f.endswith('.tmp')} == set()
  dumps = sorted(os.listdir(workdir / 'dump' / 'test'))
  assert len(dumps) == len(eval_lib.SUBSETS) * c.eval.repeats
  for name in dumps:  # every user's rows, gathered from both processes
    with np.load(workdir / 'dump' / 'test' / name) as a, np.load(tmp_path / 'one' / 'dump' / 'test' / name) as b:
      for k in b.files:  # scores: one device's program vs a batch sharded on two, rounding apart
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=f'{name}: {k}')
  for pid, out in enumerate(outs):
    printed = ' ETA' in out or '| mf |' in out
    assert printed == (pid % 2 == 0), f'process {pid % 2} printed: {out[-500:]}'
  assert 'resumed from checkpoint step' in outs[2]


def test_distributed_without_settings_names_them(monkeypatch):
  def no_cluster(**settings):
    raise ValueError('Number of processes must be defined.')
  monkeypatch.setattr(jax.distributed, 'initialize', no_cluster)
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  for var in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(var, raising=False)
  c = tiny.config('unused')
  c.train.distributed = True
  c.train.coordinator_address = 'localhost:1234'
  with pytest.raises(ValueError, match=r'train.num_processes \(\$JAX_NUM_PROCESSES\), '
                                       r'train.process_id \(\$JAX_PROCESS_ID\)'):
    parallel.initialize(c.train)
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '1')
  assert parallel.process_settings(c.train) == {'coordinator_address': 'localhost:1234',
                                                'num_processes': 2, 'process_id': 1}
