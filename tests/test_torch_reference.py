"""The PyTorch yardstick computes the JAX encoder's function; run where torch is
installed (it is not a project dependency, so CI skips these)."""

import pytest

torch = pytest.importorskip('torch')

from experiments import torch_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import test_experiments  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.slow  # ResNet18 forward and gradients in both frameworks
def test_torch_and_jax_encoders_agree_from_the_same_weights_and_the_check_can_fail(monkeypatch):
  torch_model, jax_model = torch_reference.models(width=8)
  torch_args, jax_args = torch_reference.inputs(image_size=32, images=10, width=8)
  variables = torch_reference.assert_same_function(torch_model, jax_model, torch_args, jax_args)
  assert variables['params']['stem']['kernel'].shape == (7, 7, 3, 8)

  loaded = torch_reference.jax_variables
  def off_by_a_little(*args):
    v = loaded(*args)
    v['params']['BatchNorm_0']['bias'] = v['params']['BatchNorm_0']['bias'] + 0.01
    return v
  monkeypatch.setattr(torch_reference, 'jax_variables', off_by_a_little)
  with pytest.raises(AssertionError, match='differ in their features'):
    torch_reference.assert_same_function(torch_model, jax_model, torch_args, jax_args)


@pytest.mark.slow  # a subprocess that times 512 images in both
def test_bench_torch_prints_both_times_and_their_ratio():
  out = test_experiments._module('bench_torch', '--scales=default', '--rounds=1', '--steps_per_call=2')
  assert out.returncode == 0, out.stderr
  (row,) = test_experiments._table_rows(out.stdout, 'setting', '---')
  assert len(row) == 7 and row[1] == '512', row
  jax_s, torch_s, ratio, jax_step_s, step_ratio = map(float, row[2:7])
  assert jax_s > 0 and torch_s > 0 and jax_step_s > 0
  assert abs(ratio - jax_s / torch_s) < 0.01 + 0.01 * ratio
  assert abs(step_ratio - jax_step_s / torch_s) < 0.01 + 0.01 * step_ratio
  for flag in ('--scales=huge', '--steps_per_call=0'):
    bad = test_experiments._module('bench_torch', flag)
    assert bad.returncode != 0 and flag in bad.stderr, (flag, bad.stderr)

