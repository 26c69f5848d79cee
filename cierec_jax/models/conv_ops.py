"""ResNet18's convolutions and max-pool in forms XLA CPU runs well (`model.conv_impl`).

Same parameters and same results as `lax.conv_general_dilated` / `nn.max_pool`
(tests check forward and gradients for every layer shape of ResNet18), only
faster on CPU, where XLA's native convolution is slow on small maps (a 2x2 or
1x1 map costs as much as an 8x8 one) and the max-pool's gradient is a
select-and-scatter that costs more than the forward of the whole stage. GPUs
and TPUs keep XLA's own ops: 'auto' picks 'patches' on CPU only.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

CONV_IMPLS = ('auto', 'xla', 'patches')
# Below this many output positions, one im2col matmul beats XLA CPU's convolution
# (measured per ResNet18 layer: 2x2 and 1x1 maps 3-10x faster, 4x4 and larger slower).
SMALL_MAP = 16
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def resolve(conv_impl: str) -> str:
  """'auto' -> 'patches' on CPU, 'xla' on GPU/TPU."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'model.conv_impl={conv_impl!r}: expected one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    return 'patches' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


def conv_function(conv_impl: str):
  """The `conv_general_dilated` that nn.Conv should call (None: lax's own)."""
  return patches_conv if resolve(conv_impl) == 'patches' else None


def max_pool_function(conv_impl: str):
  """ResNet's 3x3/2 max-pool with padding 1: x [N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C]."""
  if resolve(conv_impl) == 'patches':
    return max_pool_3x3s2
  return functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2),
                           padding=((1, 1), (1, 1)))


# -- convolution ---------------------------------------------------------------
def _crop_taps(size: int, k: int, stride: int, lo: int, out: int):
  """Kernel taps [i0, i1) that see real input on some output position, and the
  (lo, hi) padding that keeps the output size with only those taps. On a 1x1 map
  a 3x3 kernel with padding 1 has one such tap: the convolution is a matmul."""
  i0 = max(0, lo - (out - 1) * stride)
  i1 = min(k, size + lo)
  lo2 = lo - i0
  return i0, i1, (lo2, (out - 1) * stride + (i1 - i0) - size - lo2)


def _im2col(x, kh: int, kw: int, strides, pads):
  """x: [N, H, W, C] -> [N, Ho, Wo, kh * kw * C], the columns in HWI order."""
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  n, h, w, c = x.shape
  sh, sw = strides
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  cols = [lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def patches_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated` for NHWC/HWIO convolutions, computed as one
  matmul over im2col patches when the output map is small or the kernel 1x1.

  Taps that only ever see padding are dropped first (their gradient is zero
  either way). Larger maps, dilations and groups go to XLA's convolution,
  which is already fast there.
  """
  plain = (lhs.ndim == 4 and feature_group_count == 1 and not kwargs
           and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
           and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if plain:
    kh, kw = rhs.shape[:2]
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    outs = [(s + lo + hi - k) // st + 1
            for s, (lo, hi), k, st in zip(lhs.shape[1:3], padding, (kh, kw), window_strides)]
    (i0, i1, ph), (j0, j1, pw) = (
        _crop_taps(s, k, st, lo, o)
        for s, k, st, (lo, _), o in zip(lhs.shape[1:3], (kh, kw), window_strides, padding, outs))
    kernel = rhs[i0:i1, j0:j1]
    if kernel.shape[:2] == (1, 1) or np.prod(outs) < SMALL_MAP:
      cols = _im2col(lhs, i1 - i0, j1 - j0, window_strides, (ph, pw))
      return jnp.dot(cols, kernel.reshape(-1, kernel.shape[-1]), precision=precision)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  **kwargs)


# -- max-pool ------------------------------------------------------------------
# Window offset d in {0, 1, 2} of a 3x3/2 window with padding 1 over rows
# 2i - 1, 2i, 2i + 1 of the input: the row's parity, and whether it sits one
# output row earlier (row 2i - 1 is the odd row of output i - 1).
_PARITY = (1, 0, 1)


def _shift(v, axis: int, fill, back: bool = False):
  """out[i] = v[i - 1] (back: v[i + 1]) along axis, `fill` where that falls outside."""
  pad = [(0, 0, 0)] * v.ndim
  pad[axis] = (-1, 1, 0) if back else (1, -1, 0)
  return lax.pad(v, jnp.asarray(fill, v.dtype), pad)


def _parity_views(x):
  """x: [N, H, W, C] with H, W even -> the 9 window positions of every output,
  each [N, H/2, W/2, C], in XLA's window order (row-major)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c)
  views = []
  for dy in range(3):
    for dx in range(3):
      v = x[:, :, _PARITY[dy], :, _PARITY[dx]]
      v = _shift(v, 1, -jnp.inf) if dy == 0 else v
      views.append(_shift(v, 2, -jnp.inf) if dx == 0 else v)
  return views


def _pool_forward(x):
  """(y, which window position holds the max: int8, the first one on ties as XLA)."""
  views = _parity_views(x)
  y, argmax = views[0], jnp.zeros(views[0].shape, jnp.int8)
  for k, v in enumerate(views[1:], 1):
    better = v > y
    y = jnp.where(better, v, y)
    argmax = jnp.where(better, jnp.int8(k), argmax)
  return y, argmax


def max_pool_3x3s2(x):
  """ResNet's 3x3/2 max-pool with padding 1, as elementwise ops on the input's
  four (row, column) parity planes: no select-and-scatter in the gradient.
  x: [N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C]."""
  h, w = x.shape[1:3]
  if h % 2 or w % 2:  # an odd edge's last window ends in padding, as in XLA's
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
  return _even_max_pool(x)


@jax.custom_vjp
def _even_max_pool(x):
  return _pool_forward(x)[0]


def _pool_fwd(x):
  return _pool_forward(x)


def _pool_bwd(argmax, g):
  planes = {}
  for dy in range(3):
    for dx in range(3):
      v = jnp.where(argmax == dy * 3 + dx, g, jnp.zeros((), g.dtype))
      v = _shift(v, 1, 0, back=True) if dy == 0 else v
      v = _shift(v, 2, 0, back=True) if dx == 0 else v
      key = _PARITY[dy], _PARITY[dx]
      planes[key] = planes[key] + v if key in planes else v
  rows = [jnp.stack([planes[p, 0], planes[p, 1]], axis=3) for p in (0, 1)]  # [N, Ho, Wo, 2, C]
  n, ho, wo, _, c = rows[0].shape
  return (jnp.stack(rows, axis=2).reshape(n, 2 * ho, 2 * wo, c),)


_even_max_pool.defvjp(_pool_fwd, _pool_bwd)
