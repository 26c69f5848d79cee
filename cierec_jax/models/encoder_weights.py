"""ResNet18 encoder weights from a file (model.encoder_init), and the project's export.

Two layouts are read, in a `.safetensors` or `.npz` container:

- torchvision / timm ResNet18 state dicts: `conv1.weight` [O, I, H, W],
  `bn1.{weight,bias,running_mean,running_var}`, and per block
  `layer{s}.{b}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}.*`. Kernels go
  OIHW -> HWIO; BatchNorm weight/bias/running_mean/running_var -> scale/bias
  (params) and mean/var (batch_stats). The ImageNet classifier `fc.*` and the
  `num_batches_tracked` counters are not part of the encoder.
- the project's own export (`save`): flax paths such as `params/stem/kernel`
  and `batch_stats/BatchNorm_0/mean`, already in our layout.

Every tensor of the encoder must come from the file and every tensor of the
file must land in the encoder; the first one that does not, or whose shape
differs, is named in the error.
"""

import os
import re

import flax
import numpy as np

from cierec_jax.data.errors import DataError

BLOCKS_PER_STAGE = 2  # ResNet18: layer{s}.{b} is our BasicBlock_{2 (s - 1) + b}
TORCH_UNUSED = re.compile(r'^fc\.|\.num_batches_tracked$')
_TORCH_STEM = re.compile(r'^(conv1|bn1)\.(weight|bias|running_mean|running_var)$')
_TORCH_BLOCK = re.compile(
    r'^layer(\d+)\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.0|downsample\.1)\.'
    r'(weight|bias|running_mean|running_var)$')
# torchvision layer name -> flax submodule inside our BasicBlock (creation order).
_BLOCK_LAYER = {'conv1': 'Conv_0', 'bn1': 'BatchNorm_0', 'conv2': 'Conv_1', 'bn2': 'BatchNorm_1',
                'downsample.0': 'Conv_2', 'downsample.1': 'BatchNorm_2'}
_BN_FIELD = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
             'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}


class WeightsError(DataError):
  """A weights file that does not fit the encoder; the message names the file and tensor."""


def read(path: str) -> dict[str, np.ndarray]:
  """name -> array, from a .safetensors (numpy API, no torch) or .npz file."""
  if not os.path.isfile(path):
    raise WeightsError('no such weights file (model.encoder_init)', path)
  if path.endswith('.safetensors'):
    from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
    return dict(st_numpy.load_file(path))
  if path.endswith('.npz'):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  raise WeightsError('expected a .safetensors or .npz file', path)


def _torch_layout(name: str, x: np.ndarray) -> tuple[tuple, np.ndarray]:
  """One torchvision tensor -> (flax path, array in our layout); None for an unknown name."""
  m = _TORCH_STEM.match(name)
  if m:
    layer, field = m.group(1), m.group(2)
    module = ('stem' if layer == 'conv1' else 'BatchNorm_0',)
  else:
    m = _TORCH_BLOCK.match(name)
    if not m:
      return None
    stage, block, layer, field = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if not (1 <= stage <= 4 and block < BLOCKS_PER_STAGE):
      return None  # a deeper ResNet
    module = (f'BasicBlock_{BLOCKS_PER_STAGE * (stage - 1) + block}', _BLOCK_LAYER[layer])
  if layer.startswith('conv') or layer == 'downsample.0':
    if field != 'weight':
      return None  # our convolutions have no bias
    return ('params',) + module + ('kernel',), x.transpose(2, 3, 1, 0) if x.ndim == 4 else x
  collection, leaf = _BN_FIELD[field]
  return (collection,) + module + (leaf,), x


def _from_torch(tensors: dict, path: str) -> dict[tuple, tuple[str, np.ndarray]]:
  out = {}
  for name, x in tensors.items():
    if TORCH_UNUSED.search(name):
      continue
    mapped = _torch_layout(name, x)
    if mapped is None:
      raise WeightsError(f'tensor {name!r} {tuple(x.shape)} is not part of a ResNet18 encoder '
                         '(a deeper ResNet?)', path)
    out[mapped[0]] = (name, mapped[1])
  return out


def _from_export(tensors: dict) -> dict[tuple, tuple[str, np.ndarray]]:
  return {tuple(name.split('/')): (name, x) for name, x in tensors.items()}


def _file_shape(shape: tuple, torch: bool) -> tuple:
  """A shape in our layout as the file's layout writes it (for error messages)."""
  return (shape[3], shape[2], shape[0], shape[1]) if torch and len(shape) == 4 else shape


_LEAF_ORDER = ('kernel', 'scale', 'bias', 'mean', 'var')


def _network_order(key: tuple) -> tuple:
  """Sort key of a flax path (collection, module..., leaf): the order the layers
  run in (stem, its BatchNorm, BasicBlock_0..7 with Conv_0, BatchNorm_0, Conv_1,
  ... inside, then the projection), so errors name the earliest tensor."""
  def index(name):
    tail = name.rpartition('_')[2]
    return int(tail) if tail.isdigit() else 0
  top = key[1]
  block = 2 + index(top) if top.startswith('BasicBlock_') else 100  # 'project' last
  rank = {'stem': 0, 'BatchNorm_0': 1}.get(top, block)
  inner = -1
  if len(key) > 3:
    inner = 2 * index(key[2]) + (1 if key[2].startswith('BatchNorm') else 0)
  leaf = _LEAF_ORDER.index(key[-1]) if key[-1] in _LEAF_ORDER else len(_LEAF_ORDER)
  return rank, inner, leaf, key


def load(path: str, target: dict) -> dict:
  """Reads path into the structure of target.

  target: the encoder's variables {'params': ..., 'batch_stats': ...} (arrays
  or jax.ShapeDtypeStruct leaves). Returns the same structure with float32
  numpy arrays from the file; raises WeightsError naming the first tensor (in
  the network's order) that is missing or has another shape, or a file tensor
  that has no place in the encoder.
  """
  tensors = read(path)
  torch = any(_TORCH_STEM.match(k) for k in tensors)
  if not torch and not any(k.startswith('params/') for k in tensors):
    raise WeightsError('expected a torchvision/timm ResNet18 state dict (conv1.weight, bn1.*, '
                       'layer1.0.conv1.weight, ...) or an encoder.npz of this project '
                       f'(params/stem/kernel, ...); found {sorted(tensors)[:4]}', path)
  source = _from_torch(tensors, path) if torch else _from_export(tensors)
  flat_target = flax.traverse_util.flatten_dict(target)
  out = {}
  for key in sorted(flat_target, key=_network_order):
    want = flat_target[key]
    flax_name = '/'.join(key)
    if key not in source:
      hint = ''
      if torch and key[1] == 'project':
        hint = (': torchvision/timm ResNet18 ends at its pooled 8 * width features and has no '
                'projection; set model.feature_dim = 8 * model.encoder_width')
      raise WeightsError(f'no tensor for the encoder\'s {flax_name} {tuple(want.shape)}{hint}', path)
    name, x = source.pop(key)
    if tuple(x.shape) != tuple(want.shape):
      raise WeightsError(
          f'tensor {name!r} has shape {tuple(tensors[name].shape)}, the encoder\'s {flax_name} '
          f'needs {_file_shape(tuple(want.shape), torch)} (check model.encoder_width and '
          'model.feature_dim)', path)
    if not np.issubdtype(x.dtype, np.floating):
      raise WeightsError(f'tensor {name!r} has dtype {x.dtype}, expected floating point', path)
    out[key] = np.asarray(x, np.float32)
  if source:
    name, x = next(iter(source.values()))
    raise WeightsError(f'tensor {name!r} {tuple(tensors[name].shape)} has no place in the encoder',
                       path)
  return flax.traverse_util.unflatten_dict(out)


def save(path: str, variables: dict):
  """Writes the encoder's {'params', 'batch_stats'} as the project's npz export (atomically)."""
  flat = flax.traverse_util.flatten_dict(variables, sep='/')
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
  os.replace(tmp, path)
