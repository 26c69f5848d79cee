"""Test setup: 4 forced CPU devices (before JAX starts), one compilation
cache for the session, and tiny configs."""

import fcntl
import os
import shutil
import sys
import tempfile

os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Many tests compile the same programs (a tiny CIERec step, its evaluation);
# one persistent cache for the session, shared by xdist's workers and the
# experiment scripts run as subprocesses (they inherit the environment the
# controller sets before it starts them), cut tests/test_train.py's slow tests
# from 315 to 197 s. A cache the caller chose is used and kept.
# Every program is cached, not only those over a second to compile (JAX's
# default): a tiny run's evaluation programs (0.5-1 s each) recur in run after run.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='cierec-jax-tests-cache-')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cierec_jax import host_memory  # pylint: disable=wrong-import-position

# The workers xdist starts, and the programs tests run, inherit this: XLA's
# scratch memory on huge pages, as `python -m cierec_jax.X` has it (host_memory.py).
os.environ.update(host_memory.huge_pages_environ() or {})

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from tests import tiny  # pylint: disable=wrong-import-position


def pytest_sessionfinish(session):
  del session
  if _OWN_CACHE and 'PYTEST_XDIST_WORKER' not in os.environ:  # the controller, once workers are done
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


@pytest.fixture
def tiny_config(tmp_path):
  return tiny.config(str(tmp_path / 'data'))


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """The data_dir holding the tiny synthetic dataset, prepared once per test session."""
  from cierec_jax.data import load  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('data'))
  load.prepare(tiny.config(data_dir))
  return data_dir


@pytest.fixture(scope='session')
def tiny_data(tiny_data_dir):
  """The tiny synthetic dataset, loaded once per test session."""
  from cierec_jax.data import load  # pylint: disable=g-import-not-at-top
  return load.load(tiny.config(tiny_data_dir))


@pytest.fixture(scope='session')
def pretrained_encoder(tmp_path_factory):
  """encoder.npz of a tiny pretraining run (tiny.pretrain_config), for runs in the
  paper's setting, where the feature baselines read features this encoder
  pre-extracted (and compile no ResNet). Made once per session: xdist's workers
  share the folder, and a worker that finds another pretraining waits for it."""
  from cierec_jax import pretrain  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.getbasetemp()
  root = base.parent if 'PYTEST_XDIST_WORKER' in os.environ else base
  with open(root / 'pretrained.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return pretrain.prepare(tiny.pretrain_config(str(root / 'pretrained')))
