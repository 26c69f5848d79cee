"""XLA compile options for the programs that run the encoder, per backend.

On CPU, the XLA of jaxlib 0.10 hands three kinds of op to YNNPACK by default
(`__ynn_fusion`): single dots, reductions and convolutions. For ResNet18's
convolutions XLA's own kernels are faster. The 32x32 stem's weight gradient (a
16x16 window dilated by 2, over 512 images as features) took 79-98 ms of a
420-440 ms CIERec(MF) step under YNNPACK, and the whole step 0.37-0.39 s
against 0.30-0.35 s without it (README, Speed). CPU programs therefore keep
YNNPACK for dots and reductions and leave convolutions to XLA, except a
convolution whose only use is a reduction, which YNNPACK's reduction takes in
(the CIERec step has none). Programs without convolutions compile exactly as
under the defaults (a test checks). Paper-scale steps are unchanged: their
convolutions are matmuls (`conv_impl='winograd'`).
"""

import functools
import os
import time

from absl import logging
import jax
import numpy as np

YNN_FUSION_TYPE_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
# jaxlib 0.10's default list (dots, reductions, convolutions) less convolutions.
# A program's options take whole lists only: XLA_FLAGS's '-type' form, which
# removes one type from the default list, is refused here.
CPU_OPTIONS = {YNN_FUSION_TYPE_OPTION: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def compiler_options(platform: str | None = None) -> dict:
  """Options for `jax.jit(compiler_options=...)` on `platform` (default: JAX's
  default backend, which is also where the check compiles). Empty off CPU;
  empty when XLA_FLAGS sets the YNN fusion types itself (the user's choice
  stands); and empty, with a warning, when this XLA refuses them (a jaxlib
  whose option or values differ)."""
  platform = platform or jax.default_backend()
  # XLA reads XLA_FLAGS once, when the backend starts; reading it here per call
  # only lets tests set it.
  set_by_user = f'--{YNN_FUSION_TYPE_OPTION}=' in os.environ.get('XLA_FLAGS', '')
  return dict(_accepted(platform, set_by_user, tuple(CPU_OPTIONS.items())))


@functools.cache
def _accepted(platform: str, set_by_user: bool, options: tuple) -> tuple:
  """`options`, or () where they do not apply or XLA refuses them: XLA checks
  the values only when it compiles, so a tiny program is compiled once per
  process (and one warning given)."""
  if platform != 'cpu' or set_by_user:
    return ()
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
  except jax.errors.JaxRuntimeError as e:
    logging.warning('XLA refused the compile options %s, so programs compile with its '
                    'defaults: %s', dict(options), e)
    return ()
  return options


def jit(fn, **kwargs):
  """`jax.jit(fn, **kwargs)` with `compiler_options()`."""
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def shape_key(args) -> str:
  """The arguments' tree of (shape, dtype): one compiled program per key. It
  leaves out weak types, shardings and placement, which the callers keep fixed
  from call to call."""
  return str(jax.tree.map(
      lambda x: (np.shape(x), str(x.dtype) if hasattr(x, 'dtype') else np.result_type(x).str), args))


class AheadOfTime:
  """Executables compiled ahead of time, one per (jitted function, `shape_key`
  of its arguments), so that compile time is counted apart from running time."""

  def __init__(self, options: dict | None = None):
    self.options = options  # compiler options; None: the function's own
    self.seconds = 0.0  # spent compiling, all keys together
    self._executables = {}

  def __call__(self, fn, args: tuple):
    """The executable for fn(*args), compiled on first use."""
    key = (id(fn), shape_key(args))
    if key not in self._executables:
      start = time.perf_counter()
      self._executables[key] = fn.lower(*args).compile(self.options)
      self.seconds += time.perf_counter() - start
    return self._executables[key]

  def __len__(self) -> int:
    return len(self._executables)
