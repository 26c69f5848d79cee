"""ResNet18's convolutions and max-pool in forms XLA CPU runs well (`model.conv_impl`).

Same parameters and the same results up to float rounding as
`lax.conv_general_dilated` / `nn.max_pool` (tests check forward and gradients
for every layer shape of ResNet18 to 1e-4), only faster on CPU, where XLA's
native convolution is slow on small maps (a 2x2 or 1x1 map costs as much as an
8x8 one) and in the weight gradient of large ones, and the max-pool's gradient
is a select-and-scatter that costs more than the forward of the whole stage.
'patches' runs 1x1 kernels and small maps as im2col matmuls, the max-pool
as elementwise ops and a narrow stem's forward on space-to-depth blocks;
'winograd' adds Winograd's F(2x2, 3x3) for the other 3x3 stride-1
convolutions from 64 channels (models/winograd.py). GPUs and TPUs keep XLA's
own ops: 'auto' picks 'winograd' on CPU only. The thresholds were measured
under the programs' compile options (cierec_jax/xla_options.py).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from cierec_jax.models import winograd

CONV_IMPLS = ('auto', 'xla', 'patches', 'winograd')
# Below this many output positions, one im2col matmul beats XLA CPU's convolution
# (measured per ResNet18 layer: 2x2 and 1x1 maps 3-10x faster, 4x4 and larger slower).
SMALL_MAP = 16
# Winograd's 16 matmuls have C as their depth. Measured in the whole CIERec(MF)
# step: at 64-512 channels (224x224, width 64) it is the largest single gain; at
# 16 and 32 (32x32, width 16) the step is no faster (or a few % slower), though
# each layer alone is 1.2-1.4x faster. Nor does taking only their weight
# gradient from it: 2% faster while YNNPACK ran the convolutions, 9% slower
# since XLA runs them (333 against 303 ms, bench_conv --rounds=25).
WINOGRAD_MIN_CHANNELS = 64
# From this many output positions per image, kernels larger than 3x3 (the 7x7/2
# stem) go by im2col one chunk of images at a time: 0.50 s against XLA's 0.80 s
# at 112x112 outputs (64 images); XLA's own is faster at 16x16 (27 against 38 ms).
LARGE_MAP = 56 * 56
# Stride-2 3x3 by im2col from 7x7 outputs: faster at 7x7 to 28x28 (224x224);
# at 4x4 (32x32's stage 2) faster alone (2.0 against 3.3 ms) but not in the step.
STRIDED_MIN_MAP = 7 * 7
# A 7x7/2 stem with few filters on a map under LARGE_MAP outputs (32x32's) runs its
# forward as a 4x4/1 convolution over 2x2 space-to-depth blocks (12 input
# channels instead of 3): XLA's 22-30 ms -> 9-12 ms at 32x32 with 16 filters; with
# 64 filters XLA's own is faster (9 ms against 20), as at 224x224. Its gradients
# stay XLA's: as a convolution of the rearranged kernel its weight gradient is
# 2-4x slower.
SPACE_TO_DEPTH_MAX_FILTERS = 32
CHUNK_ROWS = 32768  # im2col rows per chunk: a few MB that are reused, not fresh pages
_NHWC = ('NHWC', 'HWIO', 'NHWC')
_SAME_PADDING_3X3 = ((1, 1), (1, 1))  # the padding that keeps a stride-1 3x3's map size


def resolve(conv_impl: str) -> str:
  """'auto' -> 'winograd' on CPU, 'xla' on GPU/TPU."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'model.conv_impl={conv_impl!r}: expected one of {CONV_IMPLS}')
  if conv_impl == 'auto':
    return 'winograd' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


def gradients_slow_in_loops(conv_impl: str) -> bool:
  """Whether XLA:CPU runs this conv_impl's gradient convolutions on its naive
  kernel inside a loop body (train.steps_per_call > 1): only XLA's own
  autodiff on CPU ('xla'); the other forms use `_native_conv`."""
  return jax.default_backend() == 'cpu' and resolve(conv_impl) == 'xla'


def conv_function(conv_impl: str):
  """The `conv_general_dilated` that nn.Conv should call (None: lax's own)."""
  impl = resolve(conv_impl)
  return None if impl == 'xla' else functools.partial(cpu_conv, use_winograd=impl == 'winograd')


def max_pool_function(conv_impl: str):
  """ResNet's 3x3/2 max-pool with padding 1: x [N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C]."""
  if resolve(conv_impl) != 'xla':
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


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, precision=None, *,
             use_winograd: bool = False, **kwargs):
  """`lax.conv_general_dilated` for NHWC/HWIO convolutions, computed as one
  matmul over im2col patches when the output map is small or the kernel 1x1.
  A narrow 7x7/2 stem under LARGE_MAP outputs (32x32's) runs forward on
  space-to-depth blocks. With `use_winograd`, 3x3 kernels of stride 1 and
  padding 1 on larger maps with at least WINOGRAD_MIN_CHANNELS inputs go by
  Winograd's F(2x2, 3x3); the other 3x3 kernels (ResNet18's stride-2 stage
  entries) from STRIDED_MIN_MAP outputs by
  im2col (XLA CPU's strided convolution needs transposed copies of its input
  and output gradient for the weight gradient: 1.2x to 1.8x per layer at
  224x224); and larger kernels on large maps (the 224x224 stem) by im2col in
  chunks. Each threshold was measured in the whole step, not only per layer:
  at 32x32 most of these forms are faster per layer but not in the step.

  Taps that only ever see padding are dropped first (their gradient is zero
  either way). Other strides, kernels, dilations and groups go to XLA's
  convolution.
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
    small = np.prod(outs) < SMALL_MAP
    winograd_3x3 = (use_winograd and not small and kernel.shape[:2] == (3, 3)
                    and tuple(window_strides) == (1, 1)
                    and tuple(map(tuple, padding)) == _SAME_PADDING_3X3)
    if winograd_3x3 and lhs.shape[-1] >= WINOGRAD_MIN_CHANNELS:
      return winograd.conv3x3(lhs, kernel)
    if use_winograd and max(kernel.shape[:2]) > 3 and np.prod(outs) >= LARGE_MAP:
      return _chunked_im2col_conv(lhs, kernel, tuple(window_strides), (ph, pw))
    if (max(kernel.shape[:2]) > 3 and tuple(window_strides) == (2, 2) and not small
        and np.prod(outs) < LARGE_MAP and kernel.shape[-1] <= SPACE_TO_DEPTH_MAX_FILTERS):
      return _conv_by_forms(lhs, kernel, (2, 2), (ph, pw), _space_to_depth, _native_conv)
    strided_3x3 = kernel.shape[:2] == (3, 3) and tuple(window_strides) != (1, 1)
    if (kernel.shape[:2] == (1, 1) or small
        or (use_winograd and strided_3x3 and np.prod(outs) >= STRIDED_MIN_MAP)):
      cols = _im2col(lhs, i1 - i0, j1 - j0, window_strides, (ph, pw))
      return jnp.dot(cols, kernel.reshape(-1, kernel.shape[-1]), precision=precision)
    if precision is None:
      return _native_conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  **kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _native_conv(x, w, strides, pads):
  """XLA's NHWC/HWIO convolution, with both gradients written as convolutions
  of that same form. Autodiff's are not (the weight gradient treats the
  images as features), and XLA:CPU rewrites such convolutions into its
  library's form only in a program's top level (ConvCanonicalization visits
  the entry computation): inside a loop, as with train.steps_per_call > 1,
  they fell to a naive kernel, 14x slower (the default CIERec step: 22 s
  for 8 steps in one call against 0.2 s a step). At the top level the
  program is the same as XLA's rewrite."""
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC)


def _native_conv_forward(x, w, strides, pads):
  return _native_conv(x, w, strides, pads), (x, w)


def _native_conv_backward(strides, pads, res, dy):
  """dy: [N, Ho, Wo, D] -> (dx [N, H, W, C], dw [kh, kw, C, D])."""
  x, w = res
  sizes, outs, kernel = x.shape[1:3], dy.shape[1:3], w.shape[:2]
  # dx: dy dilated by the strides, convolved with the flipped kernel (I and O swapped).
  dx_pads = [(k - 1 - lo, n - 1 - (o - 1) * s + lo)
             for n, o, k, s, (lo, _) in zip(sizes, outs, kernel, strides, pads)]
  dx = lax.conv_general_dilated(dy, jnp.flip(w, (0, 1)).swapaxes(2, 3), (1, 1), dx_pads,
                                lhs_dilation=strides, dimension_numbers=_NHWC)
  # dw: channels as the batch, images as the features, dy as a kernel dilated by the strides.
  dw_pads = [(lo, k + (o - 1) * s - n - lo)
             for n, o, k, s, (lo, _) in zip(sizes, outs, kernel, strides, pads)]
  dw = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), dw_pads,
                                rhs_dilation=strides, dimension_numbers=_NHWC)
  return dx, dw.transpose(1, 2, 0, 3)


_native_conv.defvjp(_native_conv_forward, _native_conv_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_by_forms(x, w, strides, pads, forward, weight_gradient):
  """XLA's convolution, computed by `forward` and with the weight gradient of
  `weight_gradient` (both called as f(x, w, strides, pads)); the input
  gradient is XLA's. For forms that win on one of the three products only."""
  return forward(x, w, strides, pads)


def _conv_by_forms_forward(x, w, strides, pads, forward, weight_gradient):
  return forward(x, w, strides, pads), (x, w)


def _conv_by_forms_backward(strides, pads, forward, weight_gradient, res, dy):
  x, w = res
  dx = jax.vjp(lambda x: _native_conv(x, w, strides, pads), x)[1](dy)[0]
  # The whole VJP of the weight-gradient form is traced; XLA drops its forward
  # product and input gradient, which nothing reads.
  return dx, jax.vjp(lambda w: weight_gradient(x, w, strides, pads), w)[1](dy)[0]


_conv_by_forms.defvjp(_conv_by_forms_forward, _conv_by_forms_backward)


def _space_to_depth(x, w, strides, pads):
  """x: [N, H, W, C], w: [kh, kw, C, D], stride 2 -> [N, Ho, Wo, D]: a stride-1
  convolution of the 2x2 blocks of x (4C channels) with the kernel, zero-padded
  to even size, cut into the same blocks."""
  assert tuple(strides) == (2, 2), strides
  n, h, wd, c = x.shape
  kh, kw = -(-w.shape[0] // 2), -(-w.shape[1] // 2)  # kernel size in blocks
  outs = [(s + lo + hi - k) // 2 + 1 for s, (lo, hi), k in zip((h, wd), pads, w.shape[:2])]
  rows, cols = 2 * (outs[0] + kh - 1), 2 * (outs[1] + kw - 1)  # padded input the blocks cover
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pads[0][0], rows - h - pads[0][0], 0),
                                          (pads[1][0], cols - wd - pads[1][0], 0), (0, 0, 0)))
  x = x.reshape(n, rows // 2, 2, cols // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  w = jnp.pad(w, ((0, 2 * kh - w.shape[0]), (0, 2 * kw - w.shape[1]), (0, 0), (0, 0)))
  w = w.reshape(kh, 2, kw, 2, c, -1).transpose(0, 2, 1, 3, 4, 5)
  return lax.conv_general_dilated(x.reshape(n, rows // 2, cols // 2, 4 * c),
                                  w.reshape(kh, kw, 4 * c, -1), (1, 1), 'VALID',
                                  dimension_numbers=_NHWC)


def _chunks(n: int, rows_per_image: int) -> int:
  """Images per chunk: the largest divisor of n within CHUNK_ROWS rows (at least 1)."""
  return max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or d * rows_per_image <= CHUNK_ROWS))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _chunked_im2col_conv(x, w, strides, pads):
  """x: [N, H, W, C], w: [kh, kw, C, D] -> [N, Ho, Wo, D], one im2col matmul per
  chunk of images, so the patch matrix never exists whole (a 472 MB one for
  the 224x224 stem costs as much to write as XLA's convolution takes)."""
  return _chunked_forward(x, w, strides, pads)[0]


def _by_chunks(x, rows_per_image: int):
  n = x.shape[0]
  c = _chunks(n, rows_per_image)
  return x.reshape(n // c, c, *x.shape[1:])


def _chunked_forward(x, w, strides, pads):
  cols = lambda xc: _im2col(xc, *w.shape[:2], strides, pads)
  out = jax.eval_shape(cols, x[:1]).shape
  y = lax.map(lambda xc: jnp.dot(cols(xc), w.reshape(-1, w.shape[-1])),
              _by_chunks(x, out[1] * out[2]))
  return y.reshape(x.shape[0], *y.shape[2:]), (x, w)


def _chunked_backward(strides, pads, res, dy):
  x, w = res
  cols = lambda xc: _im2col(xc, *w.shape[:2], strides, pads)
  xs, dys = _by_chunks(x, dy.shape[1] * dy.shape[2]), _by_chunks(dy, dy.shape[1] * dy.shape[2])
  wm = w.reshape(-1, w.shape[-1])

  def add_chunk(dw, chunk):
    xc, dyc = chunk
    return dw + jnp.einsum('nhwk,nhwd->kd', cols(xc), dyc), None
  dw, _ = lax.scan(add_chunk, jnp.zeros_like(wm), (xs, dys))

  def input_gradient(chunk):  # a loop of its own: XLA drops it when x needs no gradient
    xc, dyc = chunk
    return jax.vjp(cols, xc)[1](jnp.dot(dyc, wm.T))[0]
  dx = lax.map(input_gradient, (xs, dys))
  return dx.reshape(x.shape), dw.reshape(w.shape)


_chunked_im2col_conv.defvjp(_chunked_forward, _chunked_backward)


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


def _window_max(x):
  """The pooled maxima, elementwise over the window views (no gradient needed)."""
  return functools.reduce(jnp.maximum, _parity_views(x))


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
  return _window_max(x)


def _pool_fwd(x):
  """(y, which window position holds the max: int8, the first one on ties as XLA).

  The argmax comes from a reduction over the stacked views: as a chain of
  selects XLA fused it into the gradient's loop, which then recomputed up to
  four windows' chains per input element (20 ms of the 32x32 step); a
  reduction is computed once (whole step 245 -> 229 ms)."""
  views = jnp.stack(_parity_views(x))
  return jnp.max(views, 0), jnp.argmax(views, 0).astype(jnp.int8)


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
