"""Input-pipeline speed next to the train step it feeds, at 32x32 and 224x224.

  python -m experiments.bench_data [--config=configs/default.py] [--workers=1,2]

Prints the BPR sampler's triples/s and, for the config's images and for the
same synthetic data rendered at 224x224 (the paper's scale; --paper_items
items), the images/s of: the preloaded pipeline (a uint8 gather), PNG
decoding from ArrayRecord in 1..N worker processes, JPEG decoding of the same
images, and a decoded uint8 cache (a .npy memory map). Each delivers uint8
images, as training does: the step normalises them on the device
(`sampler.device_item_inputs`); the host's normalisation, which host-gathered
paths paid before, is its own row. Next to them, a ResNet18 train step's images/s
at that scale: the pipeline must not limit training, here or on an
accelerator that runs the step far faster.
"""

from concurrent import futures
import io
import multiprocessing
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
import PIL.Image

from cierec_jax.data import images
from cierec_jax.data import load
from cierec_jax.data import sampler as sampler_lib
from experiments import yardstick

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config file.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2'], 'Decoding worker processes to measure.')
_PAPER_ITEMS = flags.DEFINE_integer('paper_items', 300, 'Items of the 224x224 synthetic dataset.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed calls of the paper-scale train step.')


def rate(fn, count: int, min_seconds: float = 2.0) -> float:
  """count / seconds per call, repeating fn for at least min_seconds."""
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < min_seconds or calls < 2:
    fn(calls)
    calls += 1
  return count * calls / (time.perf_counter() - start)


_worker_store = None


def _open_store(config_dict):
  global _worker_store
  _worker_store = load.load(config_dict, preload=False).items


def _decode(ids):
  return _worker_store.raw(ids)  # uint8 back to the trainer, as a loader's workers would


def decode_rate(config, workers: int, batch: int) -> float:
  """Images/s of PNG decode from ArrayRecord in `workers` processes (spawned:
  JAX's threads do not survive a fork), sent back as uint8."""
  ids = np.random.default_rng(0).integers(0, int(config.dataset.num_items), (64, batch))
  batches = lambda k: [ids[(k * workers + j) % 64] for j in range(workers)]
  with futures.ProcessPoolExecutor(workers, multiprocessing.get_context('spawn'),
                                   initializer=_open_store, initargs=(config,)) as pool:
    list(pool.map(_decode, batches(0)))  # workers started and their stores open
    return rate(lambda k: list(pool.map(_decode, batches(k))), workers * batch)


def jpeg_rate(data, batch: int) -> float:
  """Images/s of JPEG decode (quality 95), one process."""
  encoded = [images.encode(x, 'jpeg') for x in data.items.raw(np.arange(min(64, data.num_items)))]
  decode = lambda b: np.asarray(PIL.Image.open(io.BytesIO(b)).convert('RGB'))
  return rate(lambda k: np.stack([decode(encoded[(k * batch + j) % len(encoded)]) for j in range(batch)]),
              batch)


def cache_rate(data, batch: int) -> float:
  """Images/s of a batch gathered from a decoded uint8 .npy memory map."""
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, 'items.npy')
    np.save(path, data.items.raw(np.arange(data.num_items)))
    cache = np.load(path, mmap_mode='r')
    ids = np.random.default_rng(0).integers(0, data.num_items, (64, batch))
    return rate(lambda k: np.asarray(cache[np.sort(ids[k % 64])]), batch)


def pipeline_rows(config, batch: int) -> list[tuple[str, float]]:
  data = load.load(config)
  s = sampler_lib.sampler_for(data, batch // 2, 0)
  batches = list(s.batches(0))
  rows = [('preloaded (uint8 gather)',
           rate(lambda k: sampler_lib.with_item_inputs(batches[k % len(batches)], data, raw=True), batch))]
  gathered = sampler_lib.with_item_inputs(batches[0], data, raw=True)['pos_content']
  rows.append(('normalise on the host (what host-gathered paths paid before)',
               rate(lambda k: images.normalize(gathered), len(gathered))))
  rows += [(f'ArrayRecord PNG decode, {w} process{"es" if int(w) > 1 else ""}',
            decode_rate(config, int(w), batch)) for w in _WORKERS.value]
  rows.append(('JPEG decode (quality 95), 1 process', jpeg_rate(data, batch)))
  rows.append(('decoded uint8 cache (.npy memory map)', cache_rate(data, batch)))
  return rows


def main(_):
  logging.set_verbosity(logging.WARNING)
  c = _CONFIG.value
  data = load.load(c)
  bs = int(c.train.batch_size)
  s = sampler_lib.sampler_for(data, bs, 0)
  n = len(s.users)
  print(f'device: {yardstick.device_line()}, {os.cpu_count()} CPUs')
  print(f'sampler ({c.dataset.name}, {n} training triples): '
        f'{rate(lambda e: s.draw(e), n):,.0f} triples/s')
  paper = c.copy_and_resolve_references()
  paper.dataset.image_size = 224
  paper.dataset.num_items = _PAPER_ITEMS.value
  paper.dataset.num_users = _PAPER_ITEMS.value * 2 // 3
  paper.eval.num_negatives = _PAPER_ITEMS.value // 4  # every user must have that many free items
  for name, cfg, size, width, batch in (
      (f'{c.dataset.name} as configured', c, data.source_shape[0], int(c.model.encoder_width), 2 * bs),
      ('paper scale (synthetic)', paper, 224, 64, 64)):
    step = yardstick.resnet18_train_images_per_second(size, width, batch, _REPEATS.value)
    print(f'\n{name}: {size}x{size} images, ResNet18 width {width} train step {step:,.1f} images/s '
          f'(batch {batch} images)')
    print('| pipeline | images/s | x the train step |')
    print('|---|---|---|')
    for row, ips in pipeline_rows(cfg, batch):
      print(f'| {row} | {ips:,.0f} | {ips / step:,.1f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
