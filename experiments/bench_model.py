"""Model speed: parameters, forward and forward+backward time, images/s.

  python -m experiments.bench_model [--conv_impls=xla,auto] [--repeats=3] [--scales=default,paper]
      [--image_size=16 --width=4] [--steps_per_call=4]

For the default config (CIERec(MF), its image size and encoder width) and for
224x224 images with encoder width 64, next to a plain ResNet18 train step,
once per `model.conv_impl` (xla: XLA's own convolutions and max-pool, the
path before conv_ops; auto: winograd on CPU). Batches are arguments of the
compiled step, as in training (constants would be folded at compile time). Then every
registered model's parameter count at the default config. The forward+backward
is timed alone per call and, as training runs image models (train.steps_per_call,
auto 4-8), per step in calls of --steps_per_call steps ('-' for conv_impl=xla on
CPU, which training keeps at one step per call).
"""

from absl import app
from absl import logging
from absl import flags
import jax
import jax.numpy as jnp

from cierec_jax import xla_options
from cierec_jax.models import conv_ops
from cierec_jax.models import registry
from configs import default
from experiments import yardstick

_BATCH = flags.DEFINE_integer('batch', 0, 'Triples per batch (0: config, or 32 at 224x224).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement.')
_CONV_IMPLS = flags.DEFINE_list('conv_impls', ['xla', 'auto'], 'model.conv_impl values to measure.')
_SCALES = flags.DEFINE_list('scales', ['default', 'paper'],
                            'default: the default config; paper: 224x224, width 64.')
_STEPS_PER_CALL = flags.DEFINE_integer('steps_per_call', 4, 'Forward+backward steps per call for '
                                       'the per-step column (1: leave it out).', lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, "Image size for every scale (0: the scale's own).",
                                   lower_bound=0)
_WIDTH = flags.DEFINE_integer('width', 0, "Encoder width for every scale (0: the scale's own).",
                              lower_bound=0)


def measure(image_size: int, width: int, batch: int, repeats: int, conv_impl: str,
            steps_per_call: int = 1) -> dict:
  model, forward_backward, variables, b = yardstick.cierec_step(image_size, width, batch, conv_impl)

  @xla_options.jit
  def forward(v, b):
    return model.apply(v, b, jnp.ones(2), train=True, mutable=['batch_stats'])[0]['pos']

  fwd = yardstick.time_per_call(forward, variables, b, repeats=repeats)
  fb = yardstick.time_per_call(xla_options.jit(forward_backward), variables, b, repeats=repeats)
  count = sum(x.size for x in jax.tree.leaves(variables['params']))
  out = {'params': count, 'forward_s': fwd, 'fwd_bwd_s': fb, 'images_per_s': 2 * batch / fb}
  if steps_per_call > 1:
    call, batches = yardstick.same_batch_in_one_call(forward_backward, b, steps_per_call)
    out['fwd_bwd_in_calls_s'] = yardstick.time_per_call(call, variables, batches,
                                                        repeats=repeats) / steps_per_call
  return out


def main(_):
  logging.set_verbosity(logging.WARNING)
  if not _SCALES.value or set(_SCALES.value) - {'default', 'paper'}:
    raise app.UsageError(f'--scales={",".join(_SCALES.value)}: expected default and/or paper')
  c = default.get_config()
  print(f'device: {yardstick.device_line()}')
  n = _STEPS_PER_CALL.value
  in_calls = f' fwd+bwd s/step, {n} per call |' if n > 1 else ''
  print('| setting | conv_impl | params | batch (triples) | forward s/batch | fwd+bwd s/batch |'
        f'{in_calls} fwd+bwd images/s | plain ResNet18 train images/s |')
  print('|---|---|---|---|---|---|---|---|' + ('---|' if n > 1 else ''))
  scales = {'default': ('default config', int(c.dataset.image_size), int(c.model.encoder_width),
                        _BATCH.value or int(c.train.batch_size)),
            'paper': ('paper scale', 224, 64, _BATCH.value or 32)}
  for name, size, width, batch in (scales[s] for s in _SCALES.value):
    if (_IMAGE_SIZE.value or size, _WIDTH.value or width) != (size, width):
      name, size, width = 'custom', _IMAGE_SIZE.value or size, _WIDTH.value or width
    for impl in _CONV_IMPLS.value:
      naive = conv_ops.gradients_slow_in_loops(impl)  # training keeps one step per call
      m = measure(size, width, batch, _REPEATS.value, impl, 1 if naive else n)
      plain = yardstick.resnet18_train_images_per_second(size, width, 2 * batch, _REPEATS.value, impl)
      step = '' if n == 1 else ' - |' if naive else f" {m['fwd_bwd_in_calls_s']:.4f} |"
      print(f"| {name} ({size}x{size}, width {width}) | {impl} | {m['params']:,} | {batch} | "
            f"{m['forward_s']:.4f} | {m['fwd_bwd_s']:.4f} |{step} {m['images_per_s']:,.0f} | "
            f"{plain:,.0f} |", flush=True)
  size, width, dims = int(c.dataset.image_size), int(c.model.encoder_width), yardstick.DIMS
  print(f'\nParameters at the default config ({size}x{size} images, encoder width {width}, '
        f"{dims['num_users']} users, {dims['num_items']} items, {dims['num_elements']} elements):")
  print('| model.name | params | of which encoder |')
  print('|---|---|---|')
  b = yardstick.example_batch(size, 2)
  # Every image model on pixels, so the counts include the ResNet18 (with a pretrained
  # encoder the feature baselines read pre-extracted features through one Dense instead).
  c.model.encoder_init = ''
  for name in registry.names():
    c.model.name = name
    total, encoder = yardstick.param_counts(registry.create(c.model, **dims), b)
    print(f'| {name} | {total:,} | {encoder:,} |', flush=True)


if __name__ == '__main__':
  app.run(main)
