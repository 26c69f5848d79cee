"""The programs' XLA compile options: on CPU, convolutions stay with XLA."""

import re

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from cierec_jax import parallel
from cierec_jax import xla_options


def _conv_grads(x, w):
  """[N, 16, 16, 32], [3, 3, 32, 32] -> (dx, dw): a shape YNNPACK takes by default."""
  def loss(x, w):
    y = lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jnp.cos(y))
  return jax.grad(loss, argnums=(0, 1))(x, w)


def _ynn_convolutions(compiled) -> int:
  """How many of the program's YNNPACK fusions hold a convolution."""
  text = compiled.as_text()
  bodies = {b.split(' ', 1)[0].lstrip('%'): b for b in text.split('\n\n')}
  return sum('convolution(' in bodies.get(c, '')
             for c in re.findall(r'calls=%([\w.]+).*__ynn_fusion', text))


def _inputs(n=256):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(n, 16, 16, 32)).astype(np.float32),
          (rng.normal(size=(3, 3, 32, 32)) / 17).astype(np.float32))


def test_cpu_programs_leave_convolutions_to_xla_and_compute_the_same():
  x, w = _inputs()
  ours = xla_options.jit(_conv_grads).lower(x, w).compile()
  assert xla_options.compiler_options() == xla_options.CPU_OPTIONS
  assert _ynn_convolutions(ours) == 0
  defaults = jax.jit(_conv_grads).lower(x, w).compile()
  # What the options are for (jaxlib 0.10.2: two); without it this test checks nothing.
  assert _ynn_convolutions(defaults) > 0, 'XLA keeps these convolutions itself: re-measure xla_options'
  for got, want in zip(ours(x, w), defaults(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))


def test_programs_without_convolutions_compile_as_under_xla_defaults():
  """Dots, reductions and elementwise ops, as in MF's step: the options keep
  the rest of XLA's default list (a jaxlib that changes it fails here)."""
  def mf_like(u, v, ids):
    scores = jnp.einsum('bd,bd->b', u[ids], v[ids]) + (u @ v.T).sum(1)[ids]
    return jax.grad(lambda u: jnp.sum(jax.nn.log_sigmoid(scores) * u[ids, 0]))(u)
  rng = np.random.default_rng(1)
  args = (rng.normal(size=(300, 64)).astype(np.float32), rng.normal(size=(300, 64)).astype(np.float32),
          rng.integers(0, 300, 256))
  text = lambda jit: re.sub(r'HloModule \S+', '', jit(mf_like).lower(*args).compile().as_text())
  assert '__ynn_fusion' in text(jax.jit)
  assert text(xla_options.jit) == text(jax.jit)


def test_both_runners_compile_the_train_call_with_the_options():
  """The train call's program, on one device (jit) and on 4 (pmap)."""
  x, w = _inputs(8)

  def call(state, batches, items, key, first_step, hparams):
    del items, key, first_step, hparams
    dx, dw = _conv_grads(batches['x'][0], state)
    # A slice, not a sum: YNNPACK's reductions take in a convolution whose only use they are.
    return state - 1e-3 * dw, {'loss': dx[0, 0, 0, :1]}

  batches = {'x': np.concatenate([x] * 32)[None]}  # [1 step, 256, 16, 16, 32]
  hparams = {'lr': np.float32(0.1)}
  jit_runner = parallel.JitRunner(call, parallel.make_mesh(jax.devices()[:1]))
  pmap_runner = parallel.PmapRunner(call)
  for runner in (jit_runner, pmap_runner):
    args = (runner.put_state(w), runner.put_batch(batches), None, jax.random.key(0), 0, hparams)
    assert _ynn_convolutions(runner.compiled(*args)) == 0, type(runner).__name__
  # The pmap runner's step runs the program `compiled` returned, compiled once.
  args = (pmap_runner.put_state(w), pmap_runner.put_batch(batches), None, jax.random.key(0), 0, hparams)
  state, metrics = pmap_runner.step(*args)
  assert len(pmap_runner._executables) == 1 and metrics['loss'].shape == (1,)
  assert state.shape == (4,) + w.shape


def test_off_cpu_or_set_by_the_user_or_refused_there_are_no_options(monkeypatch, caplog):
  assert xla_options.compiler_options('gpu') == {}
  assert xla_options.compiler_options('tpu') == {}
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=-individual_dot')
  assert xla_options.compiler_options('cpu') == {}
  monkeypatch.setenv('XLA_FLAGS', '--xla_dump_to=/tmp/xla_cpu_experimental_ynn_fusion_type')
  assert xla_options.compiler_options('cpu') == xla_options.CPU_OPTIONS
  monkeypatch.delenv('XLA_FLAGS')
  monkeypatch.setattr(xla_options, 'CPU_OPTIONS',
                      {xla_options.YNN_FUSION_TYPE_OPTION: 'LIBRARY_FUSION_TYPE_NONE_SUCH'})
  with caplog.at_level('WARNING'):
    assert xla_options.compiler_options('cpu') == {}
  assert 'LIBRARY_FUSION_TYPE_NONE_SUCH' in caplog.text


@pytest.mark.parametrize('arg, want', [
    (np.zeros((2, 3), np.float32), "((2, 3), 'float32')"),
    (lambda: jax.random.key(0), "((), 'key<fry>')"),
    (0.5, "((), '<f8')"),
])
def test_shape_key_names_shape_and_dtype(arg, want):
  assert xla_options.shape_key(arg() if callable(arg) else arg) == want
