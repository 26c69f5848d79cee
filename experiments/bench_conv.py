"""The encoder's convolution forms on this backend: per ResNet18 layer, and in the whole step.

  python -m experiments.bench_conv [--image_size=32 --width=16 --batch=256] [--rounds=5]
  python -m experiments.bench_conv --image_size=224 --width=64 --batch=32 --rounds=3
  python -m experiments.bench_conv --parts=step --steps=patches,winograd

Layers: forward + backward (y, and the gradients of x and w; the stem's input
needs none in training, so none is taken) of every distinct convolution of
ResNet18 at 2 * batch images, per `model.conv_impl`, with each form's largest
difference from XLA's (relative to XLA's largest value). Step: the CIERec(MF)
forward+backward of `bench_model`, for `patches`, `winograd`, and `winograd`
with each of its choices switched off in turn (conv_ops' thresholds), so each
choice's share of the step is measured where it matters, and `winograd` under
XLA's default compile options (on CPU, YNNPACK takes the convolutions:
cierec_jax/xla_options.py). Per-layer and
whole-step figures disagree at 32x32, which is why both are printed. All
variants alternate within a round; figures are medians over rounds, in ms.
"""

import functools

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from cierec_jax import xla_options
from cierec_jax.models import conv_ops
from cierec_jax.models import resnet
from experiments import yardstick

_IMAGE_SIZE = flags.DEFINE_integer('image_size', 32, 'Image height and width.')
_WIDTH = flags.DEFINE_integer('width', 16, 'ResNet18 width (stage-1 channels).')
_BATCH = flags.DEFINE_integer('batch', 256, 'Triples per batch (2 images each).')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Alternating rounds; medians are reported.')
_PARTS = flags.DEFINE_list('parts', ['layers', 'step'], 'What to measure: layers, step.')
_STEPS = flags.DEFINE_list('steps', [], 'Step variants to time (empty: all of them).')

_IMPLS = ('xla', 'patches', 'winograd')
_WITHOUT = {  # conv_ops threshold that switches one of winograd's choices off
    'winograd without Winograd': ('WINOGRAD_MIN_CHANNELS', 10**9),
    'winograd without strided im2col': ('STRIDED_MIN_MAP', 10**9),
    'winograd without the chunked stem': ('LARGE_MAP', 10**9),
    'winograd without the space-to-depth stem': ('SPACE_TO_DEPTH_MAX_FILTERS', 0),
}


def alternate(fns: dict, args: dict, rounds: int) -> dict:
  """Median seconds per call of each compiled fn on its args, alternating."""
  return yardstick.alternating_medians(
      {name: functools.partial(lambda f, a: jax.block_until_ready(f(*a)), fn, args[name])
       for name, fn in fns.items()}, rounds)


def layer_rows(image_size: int, width: int, images: int, rounds: int) -> list:
  rng = np.random.default_rng(0)
  rows = []
  for name, h, c, k, stride, padding, filters in resnet.conv_layers(image_size, width):
    x = jnp.asarray(rng.normal(size=(images, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c, filters)) / np.sqrt(k * k * c), jnp.float32)
    pads = padding if isinstance(padding, str) else [(padding, padding)] * 2
    fns = {}
    for impl in _IMPLS:
      conv = conv_ops.conv_function(impl) or lax.conv_general_dilated
      f = functools.partial(conv, window_strides=(stride, stride), padding=pads,
                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

      def outputs(x, w, f=f, stem=name == 'stem'):
        if stem:
          y, vjp = jax.vjp(lambda w: f(x, w), w)
        else:
          y, vjp = jax.vjp(f, x, w)
        return (y,) + vjp(jnp.cos(y))
      fns[impl] = xla_options.jit(outputs)
    seconds = alternate(fns, {impl: (x, w) for impl in fns}, rounds)
    want = fns['xla'](x, w)
    diff = {impl: max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                      for a, b in zip(fns[impl](x, w), want)) for impl in _IMPLS[1:]}
    rows.append((name, f'{h}x{h}x{c}', seconds, diff))
  return rows


# XLA's own default options: on CPU, YNNPACK takes the convolutions (xla_options).
_YNN = 'winograd with YNNPACK convolutions'
STEP_VARIANTS = ('patches', 'winograd', *_WITHOUT, _YNN)


def step_variants(image_size: int, width: int, batch: int, rounds: int, names) -> dict:
  fns, args = {}, {}
  for name in names:
    constant, value = _WITHOUT.get(name, (None, None))
    saved = constant and getattr(conv_ops, constant)
    if constant:
      setattr(conv_ops, constant, value)
    try:  # the thresholds are read while tracing: compile now
      _, forward_backward, variables, b = yardstick.cierec_step(
          image_size, width, batch, name.split()[0])
      jit = jax.jit if name == _YNN else xla_options.jit
      fns[name] = jit(forward_backward).lower(variables, b).compile()
    finally:
      if constant:
        setattr(conv_ops, constant, saved)
    args[name] = (variables, b)
  return alternate(fns, args, rounds)


def main(_):
  logging.set_verbosity(logging.WARNING)
  for name, flag in (('rounds', _ROUNDS), ('batch', _BATCH), ('width', _WIDTH),
                     ('image_size', _IMAGE_SIZE)):
    if flag.value < 1:
      raise app.UsageError(f'--{name}={flag.value}: expected 1 or more')
  if set(_PARTS.value) - {'layers', 'step'}:
    raise app.UsageError(f'--parts={",".join(_PARTS.value)}: expected layers and/or step')
  if set(_STEPS.value) - set(STEP_VARIANTS):
    raise app.UsageError(f'--steps={",".join(_STEPS.value)}: expected some of {",".join(STEP_VARIANTS)}')
  size, width, batch, rounds = _IMAGE_SIZE.value, _WIDTH.value, _BATCH.value, _ROUNDS.value
  print(yardstick.device_line())
  print(f'{size}x{size} images, width {width}, {2 * batch} images per batch, '
        f'medians of {rounds} alternating rounds')
  if 'layers' in _PARTS.value:
    print('\n| layer | input | ' + ' | '.join(f'{i} ms' for i in _IMPLS)
          + ' | ' + ' | '.join(f'{i} diff' for i in _IMPLS[1:]) + ' |')
    print('|---' * (2 + 2 * len(_IMPLS) - 1) + '|')
    for name, shape, seconds, diff in layer_rows(size, width, 2 * batch, rounds):
      print(f'| {name} | {shape} | ' + ' | '.join(f'{seconds[i] * 1e3:.1f}' for i in _IMPLS)
            + ' | ' + ' | '.join(f'{diff[i]:.1e}' for i in _IMPLS[1:]) + ' |', flush=True)
  if 'step' in _PARTS.value:
    print('\n| CIERec(MF) forward+backward | ms |\n|---|---|')
    for name, seconds in step_variants(size, width, batch, rounds, _STEPS.value or STEP_VARIANTS).items():
      print(f'| {name} | {seconds * 1e3:.1f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
