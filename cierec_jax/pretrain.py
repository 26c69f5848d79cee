"""The synthetic world's ImageNet: pretrains the ResNet18 encoder on a glyph corpus.

  python -m cierec_jax.pretrain --config=configs/default.py

Real image recommenders start from an encoder trained on ImageNet, whose
classes overlap the product categories only in part. Here the corpus is glyph
images drawn by the dataset's renderer (`synthetic.render`) from their own rng
stream, so no image is a dataset item, over all 8 shapes and 8 colours with
1..`pretrain.max_glyphs` glyphs each. The labels are the set of shapes present
(8-way multi-label) and the glyph count, never the colours: the dataset's
elements are shape x colour, so the labels name half of what an element is and
the encoder is never told about colour.

The encoder (model.encoder_width, model.feature_dim) is trained with a linear
head under Adam and saved as `<data_dir>/pretrain/encoder-<fp>/encoder.npz`
(`encoder_weights.save`) with `info.json` (settings, held-out accuracy);
`<fp>` covers everything that defines it. A second call reuses it.
`model.encoder_init='pretrain'` (the synthetic config's default) points there
and prepares it on demand.
"""

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cierec_jax import cli
from cierec_jax import prepared
from cierec_jax import report
from cierec_jax import train_step
from cierec_jax import xla_options
from cierec_jax.config_checks import ConfigError
from cierec_jax.data import builder
from cierec_jax.data.errors import DataError
from cierec_jax.data import images
from cierec_jax.data import synthetic
from cierec_jax.models import encoder_weights
from cierec_jax.models import resnet

PRETRAIN = 'pretrain'  # model.encoder_init's value for this module's encoder
_STREAM = 2  # rng stream tag: the dataset draws its items from streams 0 and 1
NUM_SHAPES = len(synthetic.SHAPES)


def settings(config) -> dict:
  """Everything that defines the pretrained encoder (and hence its fingerprint)."""
  return {'pretrain': config.pretrain.to_dict(), 'image_size': int(config.dataset.image_size),
          'noise': float(config.dataset.noise), 'encoder_width': int(config.model.encoder_width),
          'feature_dim': int(config.model.feature_dim)}


def corpus(seed: int, first: int, count: int, max_glyphs: int, size: int, noise: float):
  """Images first..first+count-1 of the corpus.

  Returns images: uint8 [N, size, size, 3]; shapes: [N, 8] float32, 1 where a
  shape is present; counts: [N] int32 glyph count - 1.
  """
  colours = list(synthetic.COLOURS)
  out_images, out_shapes, out_counts = [], np.zeros((count, NUM_SHAPES), np.float32), []
  for n, i in enumerate(range(first, first + count)):
    rng = np.random.default_rng([seed, _STREAM, i])
    k = int(rng.integers(1, max_glyphs + 1))
    shape_ids = rng.integers(0, NUM_SHAPES, k)
    colour_ids = rng.integers(0, len(colours), k)
    glyphs = [(synthetic.SHAPES[s], synthetic.COLOURS[colours[c]], 1.0) for s, c in zip(shape_ids, colour_ids)]
    out_images.append(synthetic.render(glyphs, size, rng, noise))
    out_shapes[n, shape_ids] = 1.0
    out_counts.append(k - 1)
  return np.stack(out_images), out_shapes, np.array(out_counts, np.int32)


class Classifier(nn.Module):
  """The encoder under test and a linear head: shape logits [N, 8], count logits [N, max_glyphs]."""
  width: int
  feature_dim: int
  max_glyphs: int

  @nn.compact
  def __call__(self, x, train: bool):
    e = resnet.ResNet18(self.width, self.feature_dim, name='encoder')(x, train)
    logits = nn.Dense(NUM_SHAPES + self.max_glyphs, name='head')(e)
    return logits[:, :NUM_SHAPES], logits[:, NUM_SHAPES:]


def loss_fn(shape_logits, count_logits, shapes, counts):
  """Multi-label BCE over the shapes plus softmax CE over the count, batch means."""
  bce = optax.sigmoid_binary_cross_entropy(shape_logits, shapes).sum(-1)
  ce = optax.softmax_cross_entropy_with_integer_labels(count_logits, counts)
  return jnp.mean(bce + ce)


def accuracy(shape_logits, count_logits, shapes, counts) -> dict:
  """Held-out accuracy: every shape bit right, mean per-shape bit, glyph count."""
  bits = (np.asarray(shape_logits) > 0) == (shapes > 0.5)
  return {'shapes_exact': float(bits.all(-1).mean()), 'shapes_per_label': float(bits.mean()),
          'count': float((np.asarray(count_logits).argmax(-1) == counts).mean())}


def train(config) -> tuple[dict, dict]:
  """Trains on the corpus; returns (encoder variables, info with held-out accuracy)."""
  p, s = config.pretrain, settings(config)
  start = time.time()
  corpus_args = dict(seed=int(p.seed), max_glyphs=int(p.max_glyphs), size=s['image_size'],
                     noise=s['noise'])
  x_train, y_shapes, y_counts = corpus(first=0, count=int(p.num_train), **corpus_args)
  x_held, h_shapes, h_counts = corpus(first=int(p.num_train), count=int(p.num_holdout), **corpus_args)
  render_seconds = time.time() - start

  model = Classifier(s['encoder_width'], s['feature_dim'], int(p.max_glyphs))
  bs = int(p.batch_size)
  if bs > len(x_train):
    raise ConfigError(f'pretrain.batch_size={bs} exceeds pretrain.num_train={len(x_train)}')
  # An 'rbg' key: XLA compiles the initialisers 4x faster than under threefry on CPU.
  variables = train_step.init_variables(model, jax.random.key(int(p.seed), impl='rbg'),
                                        jnp.zeros((bs,) + x_train.shape[1:]), train=True)
  steps, epochs = len(x_train) // bs, int(p.epochs)
  # Adam with a cosine decay to 0 over the run.
  tx = optax.adam(optax.cosine_decay_schedule(float(p.lr), max(1, steps * epochs)))

  @xla_options.jit
  def step(params, stats, opt, x, shapes, counts):
    def objective(q):
      (sl, cl), new = model.apply({'params': q, 'batch_stats': stats}, x, train=True,
                                  mutable=['batch_stats'])
      return loss_fn(sl, cl, shapes, counts), new['batch_stats']
    (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, loss

  predict = xla_options.jit(lambda v, x: model.apply(v, x, train=False))
  params, stats = variables['params'], variables['batch_stats']
  opt = tx.init(params)
  # Each epoch is a fresh shuffle; its last partial batch waits for the next epoch.
  train_start = time.time()
  for epoch in range(epochs):
    order = np.random.default_rng([int(p.seed), _STREAM + 1, epoch]).permutation(len(x_train))
    losses = []
    for k in range(steps):
      idx = order[k * bs:(k + 1) * bs]
      params, stats, opt, loss = step(params, stats, opt, images.normalize(x_train[idx]),
                                      y_shapes[idx], y_counts[idx])
      losses.append(loss)
    seconds = time.time() - train_start
    rate = (epoch + 1) * steps * bs / seconds
    loss = float(np.mean(jax.device_get(losses)))
    eta = (epochs - epoch - 1) * steps * bs / rate
    print('pretrain ' + report.progress_line(epoch, epochs, steps, steps, loss, rate, eta), flush=True)
  variables = {'params': params, 'batch_stats': stats}
  held = [predict(variables, images.normalize(x_held[a:a + bs])) for a in range(0, len(x_held), bs)]
  acc = accuracy(np.concatenate([h[0] for h in held]), np.concatenate([h[1] for h in held]),
                 h_shapes, h_counts)
  info = {'settings': s, 'held_out_accuracy': acc, 'num_train': len(x_train),
          'num_holdout': len(x_held),
          'labels': f'shapes present ({NUM_SHAPES}, multi-label), glyph count',
          'render_seconds': render_seconds, 'seconds': time.time() - start}
  encoder = jax.device_get({'params': params['encoder'], 'batch_stats': stats['encoder']})
  return encoder, info


def _describe(info: dict) -> str:
  a = info['held_out_accuracy']
  return (f"held-out ({info['num_holdout']:,} images): shape set exact {a['shapes_exact']:.3f}, "
          f"per shape {a['shapes_per_label']:.3f}, glyph count {a['count']:.3f}")


def prepare(config) -> str:
  """Pretrains unless done before; returns the path of encoder.npz."""
  if config.dataset.name != 'synthetic':
    raise ConfigError(f"model.encoder_init='{PRETRAIN}' is the synthetic world's pretrained "
                     f"encoder; for dataset.name={config.dataset.name!r} point model.encoder_init "
                     'at ImageNet ResNet18 weights (README: Pretrained encoders)')
  folder = os.path.join(os.path.expanduser(config.dataset.data_dir), 'pretrain',
                        f'encoder-{builder.fingerprint(settings(config))}')

  def build(tmp):
    encoder, info = train(config)
    encoder_weights.save(os.path.join(tmp, 'encoder.npz'), encoder)
    return info

  built, info = prepared.build_once(folder, build)
  path = os.path.join(folder, 'encoder.npz')
  if built:
    print(f"pretrain: trained ResNet18 on {info['num_train']:,} glyph images in "
        f"{report.format_duration(info['seconds'])}; {_describe(info)}; wrote {path}", flush=True)
  else:
    print(f'pretrain: reusing {path} ({_describe(info)})', flush=True)
  return path


def encoder_file(config) -> str:
  """model.encoder_init as a file: '' (random initialisation) stays '';
  'pretrain' is this config's pretrained encoder, prepared on demand."""
  init = config.model.encoder_init
  if init == PRETRAIN:
    return prepare(config)
  path = os.path.expanduser(init)
  if path and not os.path.isfile(path):
    raise DataError('no such weights file (model.encoder_init)', path)
  return path


if __name__ == '__main__':
  cli.run_with_config(prepare)
