"""The divergence guard: a run stops at the first bad loss or state, before
checkpointing it, so the workdir's latest checkpoint is always a good one.

A step's loss is measured with the parameters from *before* its update, so a
finite loss says nothing about the state that is about to be saved (lr=1e30
gives finite parameters of magnitude 1e30 whose next loss is inf). Before a
checkpoint is written the state itself is checked: every float in it finite,
and its loss on a fixed probe batch (the first training batch) finite and
below the bound.

The bound is `train.max_loss`, or when that is 0, AUTO_FACTOR x the run's
initial loss (its first step's, which is the initial state's loss on the probe
batch; kept in the checkpoint meta so a resumed run keeps the same bound).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

AUTO_FACTOR = 1e3


class DivergenceError(FloatingPointError):
  """The loss or the state went non-finite or past the bound; nothing bad was saved."""


@jax.jit
def _all_finite(leaves):
  """leaves: a list of float arrays -> [len(leaves)] bool, one flag each (one compile)."""
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def non_finite_leaves(tree) -> list[str]:
  """Paths of the floating-point leaves holding a NaN or an infinity."""
  leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  if not leaves:
    return []
  finite = jax.device_get(_all_finite([x for _, x in leaves]))
  return [jax.tree_util.keystr(p) for (p, _), ok in zip(leaves, finite) if not ok]


def probe_loss(runner, device_state, batches, items, key, hparams) -> float:
  """The loss of device_state on a one-step call (batches placed by
  runner.put_batch, items by runner.put_items or None), stepped on a copy:
  the runner donates the state it steps, so the original stays."""
  copy = jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False)
                      if isinstance(x, jax.Array) else x, device_state)
  _, metrics = runner.step(copy, batches, items, key, 0, hparams)
  return float(jax.device_get(metrics['loss'])[0])


class Guard:
  """Checks each step's loss and each state before it is checkpointed."""

  def __init__(self, max_loss: float = 0.0, initial_loss: float | None = None):
    self.max_loss = float(max_loss)
    self.initial_loss = initial_loss
    self._verified_step = None

  @property
  def bound(self) -> float:
    if self.max_loss > 0:
      return self.max_loss
    if self.initial_loss is None or self.initial_loss <= 0:
      return math.inf  # no scale to compare with; finiteness is still checked
    return AUTO_FACTOR * self.initial_loss

  def _describe_bound(self) -> str:
    if self.max_loss > 0:
      return f'train.max_loss={self.max_loss:g}'
    return f'the bound {self.bound:.4g} = {AUTO_FACTOR:g} x the initial loss (train.max_loss=0)'

  def check_loss(self, step: int, loss: float, what: str = 'loss', context: str = ''):
    """Raises DivergenceError if loss is non-finite or above the bound (first_bad's test)."""
    if self.first_bad(np.array([loss], np.float64)) is None:
      return
    if not math.isfinite(loss):
      raise DivergenceError(f'non-finite {what} at step {step}{context}; try a lower train.lr')
    raise DivergenceError(f'{what} {loss:.4g} at step {step} is above {self._describe_bound()}'
                          f'{context}; try a lower train.lr')

  def first_bad(self, losses: np.ndarray) -> int | None:
    """The index of the first of consecutive losses that check_loss refuses
    (None: none), the first one setting the initial loss if none is set yet."""
    if self.initial_loss is None and len(losses) and math.isfinite(losses[0]):
      self.initial_loss = float(losses[0])
    bad = np.flatnonzero(~np.isfinite(losses) | (losses > self.bound))
    return int(bad[0]) if len(bad) else None

  def check_state(self, step: int, state, probe, last_saved: int | None):
    """Before checkpointing the state after `step`: every float finite and
    probe() (its loss on the probe batch) within the bound. Checked once per
    step (the best-valid and the epoch checkpoints share it)."""
    if step == self._verified_step:
      return
    kept = (f'; not saved, the last checkpoint (step {last_saved}) is kept' if last_saved is not None
            else '; not saved (no checkpoint yet)')
    bad = non_finite_leaves(state)
    if bad:
      raise DivergenceError(f'the state after step {step} holds NaN/inf in {", ".join(bad[:3])}'
                            f'{" ..." if len(bad) > 3 else ""}{kept}; try a lower train.lr')
    self.check_loss(step, probe(), what='probe-batch loss of the state', context=kept)
    self._verified_step = step
