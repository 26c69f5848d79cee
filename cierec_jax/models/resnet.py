"""The item encoders E: ResNet18 for images, a Dense layer for pre-extracted features."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cierec_jax.models import conv_ops


class BasicBlock(nn.Module):
  filters: int
  strides: int = 1
  axis_name: str | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, axis_name=self.axis_name)
    conv = functools.partial(nn.Conv, use_bias=False,
                             conv_general_dilated=conv_ops.conv_function(self.conv_impl))
    y = conv(self.filters, (3, 3), self.strides, padding=1)(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3), padding=1)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)  # each block starts as identity
    if x.shape != y.shape:
      x = norm()(conv(self.filters, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """Standard ResNet18: 7x7/2 stem, 3x3/2 max-pool, BasicBlocks [2, 2, 2, 2], GAP.

  The pooled width is 8 * width; when that differs from `out_dim` (D) a linear
  projection maps it to D, so narrow encoders still emit D-dim features.
  `spatial=True` skips the pooling and returns one D-dim vector per cell of
  the last feature map (VECF's regions); the parameters are the same, and
  as the projection is affine, their mean over cells is the pooled output.
  `conv_impl` (conv_ops.CONV_IMPLS) only chooses how the same convolutions and
  max-pool are computed: the parameters do not depend on it, the results
  only by float rounding.
  """
  width: int = 64
  out_dim: int = 512
  axis_name: str | None = None  # set under pmap so statistics span all devices
  spatial: bool = False
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    """x: [N, H, W, 3] float32 normalised -> [N, out_dim] float32, or with
    `spatial` [N, h * w, out_dim] (h, w = H / 32, W / 32 rounded up)."""
    x = nn.Conv(self.width, (7, 7), 2, padding=3, use_bias=False, name='stem',
                conv_general_dilated=conv_ops.conv_function(self.conv_impl))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             axis_name=self.axis_name)(x))
    x = conv_ops.max_pool_function(self.conv_impl)(x)
    for stage, blocks in enumerate((2, 2, 2, 2)):
      for b in range(blocks):
        x = BasicBlock(self.width * 2**stage, 2 if stage > 0 and b == 0 else 1,
                       self.axis_name, self.conv_impl)(x, train)
    if self.spatial:
      x = x.reshape(x.shape[0], -1, x.shape[-1])
    else:
      x = jnp.mean(x, axis=(1, 2))
    if x.shape[-1] != self.out_dim:
      x = nn.Dense(self.out_dim, name='project')(x)
    return x


def conv_layers(image_size: int, width: int) -> list:
  """(name, input size H = W, input channels, kernel, stride, padding, filters)
  of every distinct convolution of ResNet18 on image_size x image_size inputs."""
  layers = [('stem', image_size, 3, 7, 2, 3, width)]
  half = lambda n: -(-n // 2)  # every stride-2 layer here (stem, pool, stage entries)
  h = half(half(image_size))
  for stage in range(4):
    c = width * 2**stage
    if stage:
      layers += [(f'stage{stage} 3x3/2', h, c // 2, 3, 2, 1, c),
                 (f'stage{stage} 1x1/2', h, c // 2, 1, 2, 'SAME', c)]
      h = half(h)
    layers.append((f'stage{stage} 3x3', h, c, 3, 1, 1, c))
  return layers


class FeatureEncoder(nn.Module):
  """relu(Dense_D(x)) for pre-extracted feature vectors.

  `regions=M > 0` returns, instead, VECF's regions of a feature vector, with
  the same parameters: its M largest-magnitude non-zero entries (ties: lower
  index first), each represented by the encoder's output for that entry
  alone, relu(W_k + b) (the output for the one-hot of entry k).
  """
  out_dim: int = 512
  regions: int = 0

  @nn.compact
  def __call__(self, x, train: bool):
    """x: [N, F] float32 -> [N, out_dim] float32; with `regions`, a triple:
    every entry's output relu(W + b) [F, out_dim] float32, each item's entries
    index [N, M'] int32 and mask [N, M'] bool (the entry is non-zero),
    M' = min(M, F). Gathering after projecting [F, ...] once per batch is
    what keeps many regions per item cheap."""
    del train
    dense = nn.Dense(self.out_dim)
    if not self.regions:
      return nn.relu(dense(x))
    dense(jnp.zeros((1, x.shape[-1]), x.dtype))  # creates the parameters; the result is unused
    entries = nn.relu(dense.variables['params']['kernel'] + dense.variables['params']['bias'])
    magnitude, index = jax.lax.top_k(jnp.abs(x), min(self.regions, x.shape[-1]))
    return entries, index, magnitude > 0


def create(spec, axis_name: str | None = None, regions: int = 0) -> nn.Module:
  """The encoder spec.encoder names ('resnet18' or 'features').

  regions > 0: the form VECF reads, one vector per cell of the ResNet's last
  feature map, or per entry for the `regions` largest entries of a feature
  vector; pre-extracted per-region vectors (spec.region_features) go through
  relu(Dense_D) each, as the cells do through the ResNet's projection.
  """
  if spec.encoder == 'resnet18':
    return ResNet18(spec.encoder_width, spec.feature_dim, axis_name=axis_name, spatial=regions > 0,
                    conv_impl=spec.conv_impl)
  if spec.encoder == 'features':
    return FeatureEncoder(spec.feature_dim, regions=0 if spec.region_features else regions)
  raise ValueError(f'encoder {spec.encoder!r}: expected resnet18 or features')


def encode_pair(encode, batch, train: bool):
  """(e_pos, e_neg): the positives and negatives of a batch of BPR triples go
  through `encode` (and its BatchNorm statistics) together."""
  e = encode(jnp.concatenate([batch['pos_content'], batch['neg_content']]), train)
  return jnp.split(e, 2)
