"""model.encoder_init: torchvision/timm ResNet18 state dicts and the project's npz export."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from cierec_jax.models import encoder_weights
from cierec_jax.models import resnet

W = 4  # tiny width; D = 8 * W as in torchvision (no projection)
BN = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
      'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}


def _bn(prefix, channels, rng, out):
  for field in BN:
    x = rng.normal(size=channels).astype(np.float32)
    out[f'{prefix}.{field}'] = np.abs(x) + 0.5 if field == 'running_var' else x
  out[f'{prefix}.num_batches_tracked'] = np.array(7, np.int64)


def torchvision_state_dict(width, rng, blocks=(2, 2, 2, 2)):
  """Random tensors under torchvision's resnet18 names and [O, I, H, W] layouts."""
  sd = {'conv1.weight': rng.normal(size=(width, 3, 7, 7)).astype(np.float32)}
  _bn('bn1', width, rng, sd)
  c_in = width
  for s, n in enumerate(blocks, start=1):
    c = width * 2 ** (s - 1)
    for b in range(n):
      p = f'layer{s}.{b}'
      sd[f'{p}.conv1.weight'] = rng.normal(size=(c, c_in if b == 0 else c, 3, 3)).astype(np.float32)
      _bn(f'{p}.bn1', c, rng, sd)
      sd[f'{p}.conv2.weight'] = rng.normal(size=(c, c, 3, 3)).astype(np.float32)
      _bn(f'{p}.bn2', c, rng, sd)
      if b == 0 and s > 1:
        sd[f'{p}.downsample.0.weight'] = rng.normal(size=(c, c_in, 1, 1)).astype(np.float32)
        _bn(f'{p}.downsample.1', c, rng, sd)
    c_in = c
  sd['fc.weight'] = rng.normal(size=(1000, 8 * width)).astype(np.float32)
  sd['fc.bias'] = rng.normal(size=1000).astype(np.float32)
  return sd


def expected_place(name):
  """Where torchvision's tensor belongs in our encoder, written out independently."""
  parts = name.split('.')
  if parts[0] in ('conv1', 'bn1'):
    module = ('stem',) if parts[0] == 'conv1' else ('BatchNorm_0',)
    layer, field = parts[0], parts[1]
  else:
    stage, block = int(parts[0][len('layer'):]), int(parts[1])
    layer, field = '.'.join(parts[2:-1]), parts[-1]
    inner = {'conv1': 'Conv_0', 'bn1': 'BatchNorm_0', 'conv2': 'Conv_1', 'bn2': 'BatchNorm_1',
             'downsample.0': 'Conv_2', 'downsample.1': 'BatchNorm_2'}[layer]
    module = (f'BasicBlock_{2 * (stage - 1) + block}', inner)
  if layer.startswith('conv') or layer == 'downsample.0':
    return ('params',) + module + ('kernel',), lambda x: x.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  collection, leaf = BN[field]
  return (collection,) + module + (leaf,), lambda x: x


def _target(width=W, out_dim=8 * W):
  return jax.eval_shape(lambda: resnet.ResNet18(width, out_dim).init(
      jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))


def _save(tmp_path, sd, name='resnet18.safetensors'):
  path = str(tmp_path / name)
  st_numpy.save_file(sd, path)
  return path


def test_every_torchvision_tensor_lands_in_place_and_stem_matches_numpy(tmp_path):
  sd = torchvision_state_dict(W, np.random.default_rng(0))
  loaded = encoder_weights.load(_save(tmp_path, sd), _target())
  flat = flax.traverse_util.flatten_dict(loaded)
  used = [k for k in sd if not k.startswith('fc.') and not k.endswith('num_batches_tracked')]
  assert len(used) == len(flat)  # one file tensor per encoder tensor
  for name in used:
    place, layout = expected_place(name)
    np.testing.assert_array_equal(flat[place], layout(sd[name]), err_msg=name)

  # The loaded encoder's stem conv + BatchNorm (inference mode) against numpy.
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  _, inter = jax.jit(lambda v, x: resnet.ResNet18(W, 8 * W).apply(
      v, x, train=False, capture_intermediates=True, mutable=['intermediates']))(loaded, x)
  got = np.asarray(inter['intermediates']['BatchNorm_0']['__call__'][0])
  xp = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
  k = sd['conv1.weight']  # [O, I, 7, 7], stride 2, padding 3
  conv = np.zeros((2, 4, 4, W), np.float64)
  for i in range(4):
    for j in range(4):
      conv[:, i, j] = np.einsum('nuvc,ocuv->no', xp[:, 2 * i:2 * i + 7, 2 * j:2 * j + 7], k)
  want = ((conv - sd['bn1.running_mean']) / np.sqrt(sd['bn1.running_var'] + 1e-5)
          * sd['bn1.weight'] + sd['bn1.bias'])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_npz_export_round_trip(tmp_path):
  loaded = encoder_weights.load(_save(tmp_path, torchvision_state_dict(W, np.random.default_rng(0))), _target())
  path = str(tmp_path / 'encoder.npz')
  encoder_weights.save(path, loaded)
  again = encoder_weights.load(path, _target())
  for k, v in flax.traverse_util.flatten_dict(loaded).items():
    np.testing.assert_array_equal(flax.traverse_util.flatten_dict(again)[k], v)


@pytest.mark.parametrize('case, message', [
    ('wider', r"tensor 'conv1.weight' has shape \(8, 3, 7, 7\), the encoder's params/stem/kernel needs \(4, 3, 7, 7\)"),
    ('resnet34', r"tensor 'layer1\.2\.[a-z0-9_.]+' \(.*\) is not part of a ResNet18 encoder"),
    ('projection', r"no tensor for the encoder's params/project/kernel .* model.feature_dim"),
    ('missing', r"no tensor for the encoder's params/BasicBlock_7/Conv_1/kernel"),
    ('conv bias', r"tensor 'layer2.0.conv1.bias' \(8,\) is not part of a ResNet18 encoder"),
])
def test_refuses_a_file_that_does_not_fit(tmp_path, case, message):
  rng = np.random.default_rng(0)
  target = _target()
  if case == 'wider':
    sd = torchvision_state_dict(2 * W, rng)
  elif case == 'resnet34':
    sd = torchvision_state_dict(W, rng, blocks=(3, 2, 2, 2))
  elif case == 'projection':
    sd, target = torchvision_state_dict(W, rng), _target(out_dim=16)
  else:
    sd = torchvision_state_dict(W, rng)
    if case == 'missing':
      del sd['layer4.1.conv2.weight']
    else:
      sd['layer2.0.conv1.bias'] = np.zeros(8, np.float32)
  with pytest.raises(encoder_weights.WeightsError, match=message):
    encoder_weights.load(_save(tmp_path, sd), target)
