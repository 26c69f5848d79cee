"""conv_impl='patches' computes ResNet18 exactly as XLA's own ops: every layer
shape at both scales, the max-pool's ties, the whole encoder and its params."""

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from cierec_jax.models import conv_ops
from cierec_jax.models import resnet
from tests import model_helpers


def resnet18_layers(image_size: int, width: int):
  """(name, input [H, C], kernel, stride, padding, filters) of every distinct convolution."""
  layers = [('stem', image_size, 3, 7, 2, 3, width)]
  h = image_size // 4
  for stage in range(4):
    c = width * 2**stage
    if stage:
      layers += [(f'stage{stage} 3x3/2', h, c // 2, 3, 2, 1, c),
                 (f'stage{stage} 1x1/2', h, c // 2, 1, 2, 'SAME', c)]
      h //= 2
    layers.append((f'stage{stage} 3x3', h, c, 3, 1, 1, c))
  return layers


def conv_outputs(conv, x, w, stride, padding):
  """y and the gradients of <y, cotangent> w.r.t. x and w."""
  pad = padding if isinstance(padding, str) else [(padding, padding)] * 2
  f = lambda x, w: conv(x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, vjp = jax.vjp(f, x, w)
  ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
  return (y,) + vjp(ct)


def assert_close(a, b, err_msg=''):
  scale = max(1.0, float(np.max(np.abs(b))))
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=err_msg)


@pytest.mark.parametrize('image_size,width,batch,every_layer_as_patches', [
    (32, 16, 3, False), (224, 64, 1, False),
    (32, 16, 3, True)])  # im2col for every map size (7x7/2 stem, 3x3/2, cropped taps)
def test_convolutions_match_xla(monkeypatch, image_size, width, batch, every_layer_as_patches):
  if every_layer_as_patches:
    monkeypatch.setattr(conv_ops, 'SMALL_MAP', 10**9)
  layers = resnet18_layers(image_size, width)
  rng = np.random.default_rng(0)
  inputs = [(rng.normal(size=(batch, h, h, c)).astype(np.float32),
             (rng.normal(size=(k, k, c, f)) / np.sqrt(k * k * c)).astype(np.float32))
            for _, h, c, k, _, _, f in layers]

  def run(conv, inputs):  # inputs as arguments: constants would be folded at compile time
    return [conv_outputs(conv, x, w, s, p) for (_, _, _, _, s, p, _), (x, w) in zip(layers, inputs)]

  want = jax.jit(run, static_argnums=0)(lax.conv_general_dilated, inputs)
  got = jax.jit(run, static_argnums=0)(conv_ops.patches_conv, inputs)
  for layer, a, b in zip(layers, got, want):
    for name, x, y in zip(('y', 'dx', 'dw'), a, b):
      assert_close(x, y, f'{layer[0]} {name}')


@pytest.mark.parametrize('shape', [(3, 16, 16, 16), (1, 112, 112, 64), (2, 7, 9, 3)])
def test_max_pool_matches_xla_including_ties(shape):
  rng = np.random.default_rng(1)
  # relu'd and rounded: many windows hold several equal maxima (zeros and others)
  x = jnp.asarray(np.round(np.maximum(rng.normal(size=shape), 0) * 2) / 2, jnp.float32)
  xla = conv_ops.max_pool_function('xla')

  @functools.partial(jax.jit, static_argnums=0)
  def outputs(pool, x):
    y, vjp = jax.vjp(pool, x)
    return y, vjp(jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape))[0]

  (y, dx), (y0, dx0) = outputs(conv_ops.max_pool_3x3s2, x), outputs(xla, x)
  np.testing.assert_array_equal(y, y0)
  # each window's gradient goes to its first maximum, as in XLA; sums of up to 4 windows
  np.testing.assert_allclose(dx, dx0, rtol=0, atol=1e-5)


def test_resnet18_params_do_not_depend_on_conv_impl_and_patches_reach_every_layer():
  x = jnp.zeros((2, 32, 32, 3), jnp.float32)
  trees, ops = {}, {}
  for impl in ('xla', 'patches'):
    model = resnet.ResNet18(16, 32, conv_impl=impl)
    variables = jax.eval_shape(lambda k, m=model: m.init(k, x, train=True), jax.random.key(0))
    trees[impl] = jax.tree.map(lambda v: (v.shape, v.dtype), variables)

    def grads(v, m=model):
      def loss(params):
        y, _ = m.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
        return jnp.sum(y)
      return jax.grad(loss)(v['params'])
    jaxpr = str(jax.make_jaxpr(grads)(variables))  # traced, not compiled
    ops[impl] = {op: jaxpr.count(op) for op in ('conv_general_dilated', 'reduce_window_max', 'dot_general')}
  assert trees['xla'] == trees['patches']  # the names and shapes pretrained weights load by
  # xla: 20 convolutions forward, one max-pool; patches: 1x1 and <4x4 maps as matmuls, own pool
  assert ops['xla']['reduce_window_max'] == 1 and ops['patches']['reduce_window_max'] == 0
  assert ops['patches']['dot_general'] > ops['xla']['dot_general']
  assert ops['patches']['conv_general_dilated'] < ops['xla']['conv_general_dilated']


def test_auto_picks_patches_on_cpu_and_bad_values_are_refused():
  assert conv_ops.resolve('auto') == 'patches'  # tests run on CPU
  with pytest.raises(ValueError, match=r"model.conv_impl='cudnn'"):
    model_helpers.make(conv_impl='cudnn')
  assert conv_ops.conv_function('xla') is None  # flax's nn.Conv calls lax.conv_general_dilated
