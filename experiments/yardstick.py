"""Shared by the benchmarks: timing and a plain ResNet18 train step as the yardstick."""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cierec_jax import train_step
from cierec_jax import xla_options
from cierec_jax.models import registry
from cierec_jax.models import resnet
from configs import default


def median_rate(rates: list) -> float | None:
  """The median of several runs' rates; None if any run could not measure one."""
  if not rates or any(r is None for r in rates):
    return None
  return statistics.median(rates)


def rate_cell(rates: list) -> str:
  """One run's rate, or the median of several runs with their range ('-': no rate)."""
  median = median_rate(rates)
  if median is None:
    return '-'
  if len(rates) == 1:
    return f'{median:,.0f}'
  return f'{median:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})'


def time_per_call(fn, *args, repeats: int = 5) -> float:
  """Seconds per call after one warm-up (compiling) call; blocks on the result."""
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def alternating_medians(calls: dict, rounds: int) -> dict:
  """Median seconds per call of each zero-argument call (which must block on its
  result), after one warm-up call each; calls alternate within rounds."""
  for call in calls.values():  # compile, allocate
    call()
  times = {name: [] for name in calls}
  names = list(calls)
  # Each round starts one variant later: in a fixed order, two identical
  # programs measured 154 and 173 ms (32x32 step, 30 rounds).
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def resnet18_train_images_per_second(image_size: int, width: int, batch: int, repeats: int = 5,
                                     conv_impl: str = 'auto') -> float:
  """A plain ResNet18 (SGD, squared-output loss) train step, images per second."""
  model = resnet.ResNet18(width, 8 * width, conv_impl=conv_impl)
  x = jnp.ones((batch, image_size, image_size, 3), jnp.float32)
  variables = train_step.init_variables(model, jax.random.key(0), x, train=True)
  tx = optax.sgd(0.1, momentum=0.9)

  @xla_options.jit
  def step(params, stats, opt, x):
    def loss(p):
      y, new = model.apply({'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats'])
      return jnp.mean(y ** 2), new['batch_stats']
    (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt

  params, stats = variables['params'], variables['batch_stats']
  opt = tx.init(params)
  seconds = time_per_call(lambda x: step(params, stats, opt, x)[0], x, repeats=repeats)
  return batch / seconds


def encoder_fwd_bwd_seconds(model, batch: dict, repeats: int = 3) -> float:
  """Seconds per forward+backward of `model.encode` (train mode) on a batch's
  positive and negative contents together, as the train step runs it."""
  x = jnp.concatenate([batch['pos_content'], batch['neg_content']])
  key = jax.random.key(0)
  variables = train_step.init_variables(model, {'params': key, 'dropout': key}, batch, None, train=True)

  @xla_options.jit
  def fwd_bwd(variables, x):
    def loss(params):
      e, _ = model.apply({**variables, 'params': params}, x, True, method='encode',
                         mutable=['batch_stats'])
      return jnp.sum(e)
    return jax.grad(loss)(variables['params'])

  return time_per_call(fwd_bwd, variables, x, repeats=repeats)


def in_one_call(forward_backward):
  """call(variables, batches [n, ...]): forward_backward on each of the n
  batches inside one program, a lax.scan as train.steps_per_call runs steps;
  the gradients are summed, so that none is dropped."""
  def call(variables, batches):
    first = jax.tree.map(lambda x: x[0], batches)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(forward_backward, variables, first))
    add = lambda total, b: (jax.tree.map(jnp.add, total, forward_backward(variables, b)), None)
    return jax.lax.scan(add, zeros, batches)[0]
  return call


def same_batch_in_one_call(forward_backward, batch, steps: int):
  """(call, batches): in_one_call(forward_backward), jitted, and `steps` copies
  of batch stacked for it, so that call(variables, batches) times `steps`
  steps of one program on the same inputs."""
  return (xla_options.jit(in_one_call(forward_backward)),
          jax.tree.map(lambda x: jnp.stack([x] * steps), batch))


def device_line() -> str:
  d = jax.devices()[0]
  return f'{jax.device_count()} x {d.device_kind} ({d.platform}), jax {jax.__version__}'


DIMS = dict(num_users=800, num_items=1200, num_elements=25, modality='image', has_annotations=True)


def example_batch(image_size: int, batch: int) -> dict:
  rng = np.random.default_rng(0)
  users, items, elements = DIMS['num_users'], DIMS['num_items'], DIMS['num_elements']
  b = {'user': rng.integers(0, users, batch), 'pos': rng.integers(0, items, batch),
       'neg': rng.integers(0, items, batch),
       'pos_content': rng.normal(size=(batch, image_size, image_size, 3)).astype(np.float32),
       'neg_content': rng.normal(size=(batch, image_size, image_size, 3)).astype(np.float32),
       'pos_elements': rng.integers(1, elements, (batch, 3)),
       'neg_elements': rng.integers(1, elements, (batch, 3)),
       'pos_lengths': np.full(batch, 3), 'neg_lengths': np.full(batch, 3),
       'weight': np.ones(batch, np.float32)}
  return {k: jnp.asarray(v, jnp.float32 if v.dtype.kind == 'f' else jnp.int32) for k, v in b.items()}


def param_counts(model, batch: dict) -> tuple:
  """(all parameters, the encoder's), traced with jax.eval_shape, not computed."""
  shapes = jax.eval_shape(lambda k: model.init({'params': k, 'dropout': k}, batch, None, train=True),
                          jax.random.key(0))['params']
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  return count(shapes), count(shapes.get('encoder', {}))


def cierec_step(image_size: int, width: int, batch: int, conv_impl: str):
  """(model, forward_backward(variables, batch) -> parameter gradients,
  variables, batch): the CIERec(MF) train step's computation, not yet jitted."""
  c = default.get_config()
  c.model.encoder_width = width
  c.model.conv_impl = conv_impl
  c.model.encoder_init = ''  # CIERec on pixels (the pretrained weights would need width 16)
  model = registry.create(c.model, **DIMS)
  b = example_batch(image_size, batch)
  variables = train_step.init_variables(model, jax.random.key(0), b, None, train=True)

  def forward_backward(v, b):
    def loss(p):
      out, _ = model.apply({**v, 'params': p}, b, jnp.ones(2), train=True, mutable=['batch_stats'])
      return jnp.mean(train_step.bpr(out['pos'] - out['neg']))
    return jax.grad(loss)(v['params'])
  return model, forward_backward, variables, b
