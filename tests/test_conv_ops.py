"""conv_impl='patches' and 'winograd' compute ResNet18 as XLA's own ops do, to
float rounding: every layer shape at both scales, odd maps, the max-pool's
ties, the whole encoder's outputs and gradients, and its params."""

import functools
import re

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from cierec_jax import train_step
from cierec_jax.models import conv_ops
from cierec_jax.models import resnet
from cierec_jax.models import winograd
from tests import model_helpers


def conv_outputs(conv, x, w, stride, padding):
  """y and the gradients of <y, cotangent> w.r.t. x and w; padding: an int for
  every side, a string, or ((lo, hi), (lo, hi))."""
  pad = [(padding, padding)] * 2 if isinstance(padding, int) else padding
  f = lambda x, w: conv(x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, vjp = jax.vjp(f, x, w)
  ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
  return (y,) + vjp(ct)


def assert_close(a, b, err_msg=''):
  scale = max(1.0, float(np.max(np.abs(b))))
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=err_msg)


@pytest.mark.slow  # every ResNet18 layer's forward and gradients compiled, per case
@pytest.mark.parametrize('image_size,width,batch,impl', [
    (32, 16, 3, 'patches'), (224, 64, 1, 'patches'),
    (32, 16, 3, 'every layer as patches'),  # im2col for every map size (7x7/2 stem, 3x3/2, cropped taps)
    (32, 16, 3, 'winograd'), (224, 64, 1, 'winograd')])  # 224: 56 to 7 (odd) maps
def test_convolutions_match_xla(monkeypatch, image_size, width, batch, impl):
  if impl == 'every layer as patches':
    monkeypatch.setattr(conv_ops, 'SMALL_MAP', 10**9)
  layers = resnet.conv_layers(image_size, width)
  rng = np.random.default_rng(0)
  inputs = [(rng.normal(size=(batch, h, h, c)).astype(np.float32),
             (rng.normal(size=(k, k, c, f)) / np.sqrt(k * k * c)).astype(np.float32))
            for _, h, c, k, _, _, f in layers]

  def run(conv, inputs):  # inputs as arguments: constants would be folded at compile time
    return [conv_outputs(conv, x, w, s, p) for (_, _, _, _, s, p, _), (x, w) in zip(layers, inputs)]

  want = jax.jit(run, static_argnums=0)(lax.conv_general_dilated, inputs)
  got = jax.jit(run, static_argnums=0)(conv_ops.conv_function(impl.split()[-1]), inputs)
  for layer, a, b in zip(layers, got, want):
    for name, x, y in zip(('y', 'dx', 'dw'), a, b):
      assert_close(x, y, f'{layer[0]} {name}')


@pytest.mark.parametrize('shape,kernel,stride,pads', [
    ((2, 8, 8, 3), 3, 1, ((1, 1), (1, 1))),
    ((2, 7, 9, 4), 3, 2, ((1, 1), (1, 1))),  # odd maps: the last row and column unused
    ((1, 12, 10, 3), 7, 2, ((3, 3), (3, 2))),  # the stem's kernel, uneven padding
    ((2, 6, 6, 4), 1, 2, ((0, 0), (0, 0))),
    ((1, 5, 6, 2), 4, 1, ((0, 2), (1, 0)))])
def test_native_convolution_gradients_match_xla(shape, kernel, stride, pads):
  rng = np.random.default_rng(1)
  x = rng.normal(size=shape).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, shape[-1], 5)).astype(np.float32)
  native = lambda x, w, strides, pads, **_: conv_ops._native_conv(x, w, strides, pads)  # pylint: disable=protected-access
  want = conv_outputs(lax.conv_general_dilated, x, w, stride, pads)
  for name, a, b in zip(('y', 'dx', 'dw'), conv_outputs(native, x, w, stride, pads), want):
    assert a.shape == b.shape, name
    assert_close(a, b, name)


@pytest.mark.slow  # ResNet18 gradients compiled inside a loop
def test_convolutions_inside_a_loop_keep_the_form_xla_cpu_runs_fast():
  """XLA:CPU rewrites other convolutions into its library's NHWC/HWIO form only
  at a program's top level; inside a loop (train.steps_per_call > 1) they ran
  on a naive kernel, 14x slower. Every convolution of the ResNet's gradient,
  compiled in a lax.scan body, must already have that form."""
  model = resnet.ResNet18(16, 32, conv_impl='winograd')
  x = jnp.ones((2, 2, 32, 32, 3), jnp.float32)
  variables = train_step.init_variables(model, jax.random.key(0), x[0], train=True)

  def steps(params, xs):
    def one(params, x):
      grads = jax.grad(lambda p: jnp.sum(model.apply(
          {**variables, 'params': p}, x, train=True, mutable=['batch_stats'])[0]))(params)
      return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), None
    return lax.scan(one, params, xs)[0]

  text = jax.jit(steps).lower(variables['params'], x).compile().as_text()
  labels = re.findall(r'= f32\[[^\]]*\][^ ]* convolution\(.*?dim_labels=([\w>-]+)', text)
  assert len(labels) >= 10, labels  # stage 1 and 2's forward, input and weight gradients
  assert set(labels) == {'b01f_01io->b01f'}, labels


@pytest.mark.parametrize('shape,filters', [((2, 4, 4, 3), 5), ((1, 5, 8, 2), 3), ((2, 7, 9, 4), 4)])
def test_winograd_matches_xla_on_odd_and_rectangular_maps(shape, filters):
  rng = np.random.default_rng(2)
  x = rng.normal(size=shape).astype(np.float32)
  w = (rng.normal(size=(3, 3, shape[-1], filters)) / 3).astype(np.float32)
  conv = lambda x, w, *args, **kwargs: winograd.conv3x3(x, w)
  want = jax.jit(conv_outputs, static_argnums=(0, 3, 4))(lax.conv_general_dilated, x, w, 1, 1)
  got = jax.jit(conv_outputs, static_argnums=(0, 3, 4))(conv, x, w, 1, 1)
  for name, a, b in zip(('y', 'dx', 'dw'), got, want):
    assert_close(a, b, name)


@pytest.mark.parametrize('shape,kernel,pads', [
    ((2, 32, 32, 3), 7, ((3, 3), (3, 3))),  # the 32x32 stem
    ((2, 9, 11, 3), 7, ((3, 3), (3, 3))),  # odd maps
    ((1, 10, 7, 2), 5, ((2, 1), (0, 2))),  # another kernel, uneven padding
    ((2, 8, 8, 3), 4, ((1, 1), (1, 1)))])  # an even kernel
def test_space_to_depth_stem_matches_xla(shape, kernel, pads):
  rng = np.random.default_rng(3)
  x = rng.normal(size=shape).astype(np.float32)
  w = (rng.normal(size=(kernel, kernel, shape[-1], 6)) / kernel).astype(np.float32)
  conv = lambda x, w, strides, pads, **_: conv_ops._conv_by_forms(
      x, w, strides, pads, conv_ops._space_to_depth, conv_ops._native_conv)
  got, want = (conv_outputs(c, x, w, 2, pads) for c in (conv, lax.conv_general_dilated))
  for name, a, b in zip(('y', 'dx', 'dw'), got, want):
    assert_close(a, b, name)


def test_chunked_im2col_matches_xla_chunk_by_chunk(monkeypatch):
  monkeypatch.setattr(conv_ops, 'CHUNK_ROWS', 250)  # 100 output rows per image: 3 chunks of 2
  assert conv_ops._chunks(6, 100) == 2 and conv_ops._chunks(7, 100) == 1
  rng = np.random.default_rng(4)
  x = rng.normal(size=(6, 20, 20, 3)).astype(np.float32)
  w = (rng.normal(size=(7, 7, 3, 5)) / 10).astype(np.float32)
  chunked = lambda x, w, strides, pads, **kwargs: conv_ops._chunked_im2col_conv(
      x, w, strides, tuple(map(tuple, pads)))
  want = jax.jit(conv_outputs, static_argnums=(0, 3, 4))(lax.conv_general_dilated, x, w, 2, 3)
  got = jax.jit(conv_outputs, static_argnums=(0, 3, 4))(chunked, x, w, 2, 3)
  for name, a, b in zip(('y', 'dx', 'dw'), got, want):
    assert_close(a, b, name)


@pytest.mark.slow  # two ResNet18 gradient compiles
def test_resnet18_outputs_and_gradients_match_xla():
  """'winograd' against 'xla' at the default width (16), whose forms include
  the narrow stem's; 'patches' takes a subset of winograd's forms. Width 64's
  forms are checked layer by layer: against XLA above at 224x224, and by
  bench_conv's test at 16x16 (Winograd on 4x4 maps, im2col on 1x1 and 2x2); the
  whole network at width 64 (39 s of the suite) checked no other form."""
  width = 16
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
  ct = jnp.asarray(rng.normal(size=(4, 32)), jnp.float32)
  # The initialisers compiled in the gradient's program took as long as the gradient.
  variables = train_step.init_variables(resnet.ResNet18(width, 32), jax.random.key(0), x, train=True)

  @functools.partial(jax.jit, static_argnums=0)
  def step(impl, variables, x, ct):
    model = resnet.ResNet18(width, 32, conv_impl=impl)

    def loss(params):
      y, new = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
      return jnp.vdot(y, ct), (y, new)
    return jax.grad(loss, has_aux=True)(variables['params'])

  want, got = (step(impl, variables, x, ct) for impl in ('xla', 'winograd'))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for path, a, b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(a, b, jax.tree_util.keystr(path[0]))


def grad_jaxpr(model, x) -> str:
  """The program of the parameter gradients of sum(model(x)), traced, not compiled."""
  variables = jax.eval_shape(lambda k: model.init(k, x, train=True), jax.random.key(0))

  def grads(v):
    def loss(params):
      y, _ = model.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
      return jnp.sum(y)
    return jax.grad(loss)(v['params'])
  return str(jax.make_jaxpr(grads)(variables))


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
  np.testing.assert_array_equal(y, y0)  # the training forward (argmax by a reduction)
  np.testing.assert_array_equal(jax.jit(conv_ops.max_pool_3x3s2)(x), y0)  # the plain one
  # each window's gradient goes to its first maximum, as in XLA; sums of up to 4 windows
  np.testing.assert_allclose(dx, dx0, rtol=0, atol=1e-5)


@pytest.mark.slow  # ResNet18 gradients traced per conv_impl and width
def test_resnet18_params_do_not_depend_on_conv_impl_and_patches_reach_every_layer():
  x = jnp.zeros((2, 32, 32, 3), jnp.float32)
  trees, ops = {}, {}
  for impl in ('xla', 'patches', 'winograd'):
    model = resnet.ResNet18(64, 32, conv_impl=impl)
    variables = jax.eval_shape(lambda k, m=model: m.init(k, x, train=True), jax.random.key(0))
    trees[impl] = jax.tree.map(lambda v: (v.shape, v.dtype), variables)
    jaxpr = grad_jaxpr(model, x)
    ops[impl] = {op: jaxpr.count(op) for op in ('conv_general_dilated', 'reduce_window_max', 'dot_general')}
  assert trees['xla'] == trees['patches'] == trees['winograd']  # the names and shapes pretrained weights load by
  # xla: 20 convolutions forward, one max-pool; patches: 1x1 and <4x4 maps as matmuls, own pool
  assert ops['xla']['reduce_window_max'] == 1 and ops['patches']['reduce_window_max'] == 0
  assert ops['patches']['dot_general'] > ops['xla']['dot_general']
  assert ops['patches']['conv_general_dilated'] < ops['xla']['conv_general_dilated']
  # winograd: also the 3x3 stride-1 convolutions of the 8x8 and 4x4 stages (64 and 128
  # channels, 7 of them), forward and backward, as batched matmuls
  assert ops['winograd']['conv_general_dilated'] < ops['patches']['conv_general_dilated']
  assert ops['winograd']['dot_general'] >= ops['patches']['dot_general'] + 7 * 3


@pytest.mark.slow  # ResNet18 gradients traced per width
def test_winograd_takes_3x3_convolutions_from_64_channels_only():
  """At 32x32 and width 16 (16 and 32 channels) Winograd's form does not pay
  off in the step, in whole or for the weight gradients alone (README, Speed):
  'winograd' is 'patches' there, and differs at width 64."""
  x = jnp.zeros((2, 32, 32, 3), jnp.float32)
  for width, same in ((16, True), (64, False)):
    got = grad_jaxpr(resnet.ResNet18(width, 32, conv_impl='winograd'), x)
    assert (got == grad_jaxpr(resnet.ResNet18(width, 32, conv_impl='patches'), x)) == same, width


@pytest.mark.slow  # ResNet18 gradients traced per width
def test_the_narrow_stem_runs_forward_on_space_to_depth_blocks():
  """The 7x7/2 stem on 32x32 with 16 filters: forward as a 4x4 convolution of
  12-channel blocks (its gradients, XLA's, are checked against XLA's above);
  with 64 filters, or conv_impl='xla', XLA's forward."""
  x = jnp.zeros((2, 32, 32, 3), jnp.float32)
  blocks = 'f32[4,4,12,16]'
  for impl in ('patches', 'winograd'):
    assert blocks in grad_jaxpr(resnet.ResNet18(16, 32, conv_impl=impl), x)
  assert blocks not in grad_jaxpr(resnet.ResNet18(16, 32, conv_impl='xla'), x)
  assert 'f32[4,4,12,64]' not in grad_jaxpr(resnet.ResNet18(64, 32, conv_impl='winograd'), x)


def test_auto_picks_winograd_on_cpu_and_bad_values_are_refused():
  assert conv_ops.resolve('auto') == 'winograd'  # tests run on CPU
  with pytest.raises(ValueError, match=r"model.conv_impl='cudnn'"):
    model_helpers.make(conv_impl='cudnn')
  assert conv_ops.conv_function('xla') is None  # flax's nn.Conv calls lax.conv_general_dilated
