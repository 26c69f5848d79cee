"""Pre-extracted item features: every item encoded once by the pretrained, frozen encoder.

  python -m cierec_jax.features --config=configs/default.py

The paper's VBPR, MF(Image) and Base read CNN features extracted once, not
pixels. This module runs the ResNet18 (model.encoder_width, model.feature_dim)
loaded from model.encoder_init in inference mode over every item's normalised
image and stores the [items, D] float32 table next to the prepared dataset:
`<data_dir>/<dataset>/features-<dataset fp>-<encoder fp>/features.npy`, the
encoder fingerprint hashing the weights file's bytes, so other weights never
reuse a table. A second call reuses it. A model whose encoder resolves to
'features' on an image dataset reads this table instead of the images
(`for_model`, prepared on demand).
"""

import dataclasses
import os
import time

import jax
import numpy as np

from cierec_jax import cli
from cierec_jax import prepared
from cierec_jax import pretrain
from cierec_jax import report
from cierec_jax import xla_options
from cierec_jax.config_checks import ConfigError
from cierec_jax.data import builder
from cierec_jax.data import dataset as dataset_lib
from cierec_jax.data.errors import DataError
from cierec_jax.data import load
from cierec_jax.data import raw as raw_lib
from cierec_jax.models import encoder_weights
from cierec_jax.models import resnet


def extract(config, data, weights: str, regions: bool = False) -> np.ndarray:
  """[items, D] float32: the encoder from `weights`, inference mode, over data's
  images; with `regions`, [items, h * w, D]: one vector per cell of its last
  feature map (resnet.ResNet18(spatial=True), whose mean is the pooled vector)."""
  encoder = resnet.ResNet18(int(config.model.encoder_width), int(config.model.feature_dim),
                            spatial=regions)
  bs = int(config.eval.encode_batch_size)
  example = data.items.content(np.zeros(bs, np.int64))
  target = jax.eval_shape(lambda: encoder.init(jax.random.key(0), example, train=False))
  variables = encoder_weights.load(weights, target)
  encode = xla_options.jit(
      lambda v, x: encoder.apply(v, dataset_lib.model_content(x, data.items.modality), train=False))
  chunks = []
  for a in range(0, data.num_items, bs):
    ids = np.arange(a, min(data.num_items, a + bs))
    padded = np.concatenate([ids, np.zeros(bs - len(ids), ids.dtype)])  # one compiled shape
    chunks.append(np.asarray(encode(variables, data.items.raw(padded)))[:len(ids)])  # normalised on the device
  return np.concatenate(chunks).astype(np.float32)


def prepare(config, data=None, regions: bool = False) -> str:
  """Extracts the table (with `regions`, the per-region table) unless done
  before; returns the path of its features.npy."""
  data = load.load(config) if data is None else data
  if data.modality != raw_lib.IMAGE:
    raise ConfigError(f'dataset.name={config.dataset.name!r} has {data.modality} items, not images: '
                     'its own vectors are the features')
  weights = pretrain.encoder_file(config)
  if not weights:
    raise ConfigError("features are extracted by a pretrained encoder: set model.encoder_init "
                     "(a .safetensors/.npz ResNet18 weights file, or 'pretrain' on synthetic)")
  sha1 = prepared.file_sha1(weights)
  encoder_fp = builder.fingerprint({'encoder_sha1': sha1,
                                    'encoder_width': int(config.model.encoder_width),
                                    'feature_dim': int(config.model.feature_dim)})
  dataset_fp = builder.fingerprint(load.content_settings(config))
  kind = 'regions' if regions else 'features'
  folder = os.path.join(data.path, f'{kind}-{dataset_fp}-{encoder_fp}')

  def build(tmp):
    start = time.time()
    table = extract(config, data, weights, regions)
    np.save(os.path.join(tmp, 'features.npy'), table)
    return {'encoder_file': os.path.abspath(weights), 'encoder_sha1': sha1,
            'shape': list(table.shape), 'seconds': time.time() - start}

  built, info = prepared.build_once(folder, build)
  path = os.path.join(folder, 'features.npy')
  shape = 'x'.join(map(str, info['shape']))
  if built:
    print(f"{kind}: encoded {info['shape'][0]:,} items with {info['encoder_file']} in "
          f"{report.format_duration(info['seconds'])}; wrote {shape} float32 {path}", flush=True)
  else:
    print(f"{kind}: reusing {shape} float32 {path} (from {info['encoder_file']})", flush=True)
  return path


def for_model(config, data: dataset_lib.RecData, spec) -> dataset_lib.RecData:
  """The dataset as the model of `spec` (models.spec.ModelSpec) reads it: on an
  image dataset a 'features' encoder reads the pre-extracted table (prepared
  on demand; the per-region one for spec.region_features) in place of the
  images; otherwise data unchanged."""
  if spec.encoder != 'features' or data.modality != raw_lib.IMAGE:
    return data
  path = prepare(config, data, spec.region_features)
  table = np.load(path)
  if table.shape[0] != data.num_items:
    raise DataError(f'{table.shape[0]} rows, expected one per item ({data.num_items})', path)
  return dataclasses.replace(data, items=dataset_lib.ItemStore.from_array(table, raw_lib.FEATURES))


if __name__ == '__main__':
  cli.run_with_config(prepare)
