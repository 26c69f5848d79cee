"""The item encoders E: ResNet18 for images, a Dense layer for pre-extracted features."""

import functools

import flax.linen as nn
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
  `conv_impl` (conv_ops.CONV_IMPLS) only chooses how the same convolutions and
  max-pool are computed: the parameters and results do not depend on it.
  """
  width: int = 64
  out_dim: int = 512
  axis_name: str | None = None  # set under pmap so statistics span all devices
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    """x: [N, H, W, 3] float32 normalised -> [N, out_dim] float32."""
    x = nn.Conv(self.width, (7, 7), 2, padding=3, use_bias=False, name='stem',
                conv_general_dilated=conv_ops.conv_function(self.conv_impl))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             axis_name=self.axis_name)(x))
    x = conv_ops.max_pool_function(self.conv_impl)(x)
    for stage, blocks in enumerate((2, 2, 2, 2)):
      for b in range(blocks):
        x = BasicBlock(self.width * 2**stage, 2 if stage > 0 and b == 0 else 1,
                       self.axis_name, self.conv_impl)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if x.shape[-1] != self.out_dim:
      x = nn.Dense(self.out_dim, name='project')(x)
    return x


class FeatureEncoder(nn.Module):
  """relu(Dense_D(x)) for pre-extracted feature vectors."""
  out_dim: int = 512

  @nn.compact
  def __call__(self, x, train: bool):
    """x: [N, F] float32 -> [N, out_dim] float32."""
    del train
    return nn.relu(nn.Dense(self.out_dim)(x))
