"""Test setup: 4 forced CPU devices (before JAX starts) and tiny configs."""

import os
import sys

os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from tests import tiny  # pylint: disable=wrong-import-position


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
