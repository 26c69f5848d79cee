"""Input-pipeline speed on the default config, next to a ResNet18 train step.

  python -m experiments.bench_data [--config=configs/default.py]

Prints the BPR sampler's triples/s, the image pipeline's images/s (from memory,
and decoding from ArrayRecord), and a ResNet18 train step's images/s at the
same image size and encoder width: the pipeline must not limit training.
"""

import time

from absl import app
from absl import logging
from ml_collections import config_flags

from cierec_jax.data import load
from cierec_jax.data import sampler as sampler_lib
from experiments import yardstick

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config file.')


def rate(fn, count: int, min_seconds: float = 2.0) -> float:
  """count / seconds per call, repeating fn for at least min_seconds."""
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < min_seconds or calls < 2:
    fn(calls)
    calls += 1
  return count * calls / (time.perf_counter() - start)


def main(_):
  logging.set_verbosity(logging.WARNING)
  c = _CONFIG.value
  data = load.load(c)
  bs = int(c.train.batch_size)
  s = sampler_lib.sampler_for(data, bs, 0)
  n = len(s.users)
  triples = rate(lambda e: s.epoch_triples(e), n)
  batches = list(s.batches(0))
  memory = rate(lambda k: sampler_lib.with_item_inputs(batches[k % len(batches)], data), 2 * bs)
  disk = load.load(c, preload=False)
  decode = rate(lambda k: sampler_lib.with_item_inputs(batches[k % len(batches)], disk), 2 * bs)
  size, width = data.source_shape[0], int(c.model.encoder_width)
  print(f'device: {yardstick.device_line()}')
  print(f'dataset {c.dataset.name}: {n} training triples, batch {bs}, images {data.source_shape}')
  print(f'sampler:                         {triples:12,.0f} triples/s')
  print(f'image pipeline (preloaded):      {memory:12,.0f} images/s  (normalised float32, pos + neg)')
  print(f'image pipeline (ArrayRecord):    {decode:12,.0f} images/s  (PNG decode + normalise)')
  for w in sorted({width, 64}):
    ips = yardstick.resnet18_train_images_per_second(size, w, 2 * bs)
    print(f'ResNet18 train step, width {w:3d}: {ips:12,.0f} images/s  ({size}x{size}, batch {2 * bs})')


if __name__ == '__main__':
  app.run(main)
