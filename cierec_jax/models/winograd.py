"""3x3 stride-1 convolutions by Winograd's minimal filtering, F(2x2, 3x3).

Lavin & Gray (2016): each 2x2 output tile comes from its 4x4 input tile as
A^T [(G w G^T) * (B^T d B)] A, 16 multiplies per input channel where the direct
form needs 36, and the 16 products of all tiles are 16 matmuls of
[tiles, C] x [C, D] that XLA CPU runs at matmul speed. Its own convolutions
run stage 1 of a 224x224 ResNet18 at 27-43 GFLOP/s in the weight gradient;
this form runs a whole stage-1 convolution's forward+backward 2x faster, and
is ahead at every 3x3 map of ResNet18 from 4x4 up (README, Speed). The
transforms only add and subtract (G's halves are exact), so results differ
from the direct form by rounding alone: ~1e-6 relative.

The gradient is written out (custom VJP) rather than derived: autodiff of the
strided slices that cut the overlapping tiles gives scatter-adds and 16-way
concatenations that XLA CPU leaves unfused, 1.7x slower.
"""

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
_BATCHED = ((0,), (0,))  # the 16 tile positions are a dot_general batch dimension


def _signed_sum(terms):
  """sum c * t over (c, t), c in {-1, 0, 1}: adds and subtracts only."""
  out = None
  for c, t in terms:
    if c:
      out = (t if c > 0 else -t) if out is None else (out + t if c > 0 else out - t)
  return out


def _transform(planes, left: np.ndarray, right: np.ndarray):
  """out[k][l] = sum_{r, c} left[k, r] right[l, c] planes[r, c] (the planes a dict)."""
  return [[_signed_sum([(left[k, r] * right[l, c], planes[r, c]) for r, c in planes])
           for l in range(right.shape[0])] for k in range(left.shape[0])]


def _stack16(planes):
  """[4][4] of [...] -> [16, ...]. Nested: XLA CPU fuses a 4-way concatenation
  with its operands' arithmetic, not a 16-way one (3x slower, measured)."""
  return jnp.stack([jnp.stack(row) for row in planes]).reshape(16, *planes[0][0].shape)


def _interleave(planes):
  """[2][2] of [N, T, S, C] -> [N, 2T, 2S, C], planes[a][b] at rows 2i+a, columns 2j+b."""
  n, t, s, c = planes[0][0].shape
  return jnp.stack([jnp.stack(row, axis=3) for row in planes], axis=2).reshape(n, 2 * t, 2 * s, c)


def _forward(x, w):
  n, h, wd, c = x.shape
  th, tw = h // 2, wd // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  tiles = {(r, q): xp[:, r:r + 2 * th:2, q:q + 2 * tw:2] for r in range(4) for q in range(4)}
  v = _stack16(_transform(tiles, _BT, _BT)).reshape(16, n * th * tw, c)  # B^T d B
  u = jnp.einsum('ai,bj,ijcd->abcd', _G, _G, w).reshape(16, c, w.shape[-1])  # G w G^T
  m = lax.dot_general(v, u, (((2,), (1,)), _BATCHED)).reshape(16, n, th, tw, -1)
  y = _interleave(_transform({(k, l): m[4 * k + l] for k in range(4) for l in range(4)}, _AT, _AT))
  return y, (v, u)


def _backward(res, dy):
  v, u = res
  n, h, wd, d = dy.shape
  th, tw, c = h // 2, wd // 2, u.shape[1]
  dm = _transform({(a, b): dy[:, a::2, b::2] for a in range(2) for b in range(2)}, _AT.T, _AT.T)
  dm = _stack16(dm).reshape(16, n * th * tw, d)
  du = lax.dot_general(v, dm, (((1,), (1,)), _BATCHED))  # [16, C, D]
  dw = jnp.einsum('ai,bj,abcd->ijcd', _G, _G, du.reshape(4, 4, c, d))
  dv = lax.dot_general(dm, u, (((2,), (2,)), _BATCHED)).reshape(16, n, th, tw, c)
  dtile = _transform({(k, l): dv[4 * k + l] for k in range(4) for l in range(4)}, _BT.T, _BT.T)

  def at(t, down: int, right: int):  # a tile offset of 2 is the next tile's offset 0
    return jnp.pad(t, ((0, 0), (down, 1 - down), (right, 1 - right), (0, 0)))
  # padded input row 2i + p is offset p of tile i and offset p + 2 of tile i - 1
  dxp = _interleave([[at(dtile[p][q], 0, 0) + at(dtile[p + 2][q], 1, 0)
                      + at(dtile[p][q + 2], 0, 1) + at(dtile[p + 2][q + 2], 1, 1)
                      for q in range(2)] for p in range(2)])
  return dxp[:, 1:-1, 1:-1], dw


@jax.custom_vjp
def _even_conv3x3(x, w):
  return _forward(x, w)[0]


_even_conv3x3.defvjp(_forward, _backward)


def conv3x3(x, w):
  """The 3x3 stride-1 convolution with padding 1 (cross-correlation, as lax's).

  x: [N, H, W, C] float32, w: [3, 3, C, D] float32 (HWIO) -> [N, H, W, D].
  An odd H or W gets one more zero row or column at the end, whose outputs
  are cropped: the kept outputs see the same zero padding as before.
  """
  h, wd = x.shape[1:3]
  if h % 2 or wd % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, wd % 2), (0, 0)))
    return _even_conv3x3(x, w)[:, :h, :wd]
  return _even_conv3x3(x, w)
