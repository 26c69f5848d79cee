"""What updating only a batch's embedding rows would buy MF (issue 15's 1M triples/s).

  python -m experiments.bench_sparse_update [--rounds=2] [--calls=20]

A hand-written MF BPR step at MovieLens-100K's shapes (943 users, 1,682
items, d = 64, batch 256, 233 steps per call as `steps_per_call` gives it),
outside the model and optax, with Adagrad applied three ways:

- dense: every row of every table, as optax does;
- rows in place: the batch's rows only, read and written by index;
- rows, dense apply: the batch rows' Adagrad, returned as a dense update
  and added as `p + u`, which is the form an optax transformation must take;
and dense again with the gradient norm on every step (as `train_step` measured it
before it was measured only where a train record ends).

Prints triples/s (best call of --calls) for each, and how far each one's
parameters end from dense's after one call from the same start.
"""

import functools
import time

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from cierec_jax import train_step
from experiments import yardstick

_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Measurements of each form, interleaved.')
_CALLS = flags.DEFINE_integer('calls', 20, 'Timed calls per measurement (the best counts).')
_UNROLL = flags.DEFINE_integer('unroll', 4, 'Steps per loop iteration, as train_step.scan_unroll.')

USERS, ITEMS, DIM, BATCH, STEPS = 943, 1682, 64, 256, 233
LR, EPS, L2 = 0.05, 1e-10, 1e-4


def bpr_loss(rows):
  """rows: p [B, d], b_u [B, 1], q_pos, q_neg [B, d], b_pos, b_neg [B, 1] -> scalar."""
  p, bu, qp, bp, qn, bn = rows
  diff = (jnp.sum(p * qp, -1) + bp[:, 0]) - (jnp.sum(p * qn, -1) + bn[:, 0])
  reg = (jnp.sum(p ** 2, -1) + bu[:, 0] ** 2 + jnp.sum(qp ** 2, -1) + bp[:, 0] ** 2
         + jnp.sum(qn ** 2, -1) + bn[:, 0] ** 2)
  return jnp.mean(-jax.nn.log_sigmoid(diff)) + L2 * jnp.mean(reg)


def lookups(params, u, i, j):
  return (params['P'][u], params['bu'][u], params['Q'][i], params['bi'][i], params['Q'][j],
          params['bi'][j])


def adagrad(g, acc):
  """optax.adagrad's arithmetic, in its order: (new accumulator, g / sqrt(acc))."""
  acc = g * g + acc
  return acc, jnp.where(acc > 0, lax.rsqrt(acc + EPS), 0.0) * g


def grads(params, batch):
  """The dense gradient of every table (a scatter of the lookups' rows: duplicates summed)."""
  return jax.grad(lambda p: bpr_loss(lookups(p, *batch)))(params)


def dense_step(carry, batch, log_norm=False):
  params, acc = carry
  g = grads(params, batch)
  new = {k: adagrad(g[k], acc[k]) for k in params}
  carry = ({k: params[k] + new[k][1] * -LR for k in params}, {k: new[k][0] for k in params})
  return carry, train_step.global_norm(g) if log_norm else None  # the norm train_step logs


def rows_step(carry, batch, in_place=True):
  """Adagrad on the rows the batch looks up; the update written in place, or
  returned dense and added (what an optax transformation returns)."""
  params, acc = carry
  g = grads(params, batch)
  u, i, j = batch
  items = jnp.concatenate([i, j])
  out_p, out_a = {}, {}
  for k, rows in {'P': u, 'bu': u, 'Q': items, 'bi': items}.items():
    a, step = adagrad(g[k][rows], acc[k][rows])
    if in_place:
      out_p[k] = params[k].at[rows].set(params[k][rows] + step * -LR)
    else:
      out_p[k] = params[k] + jnp.zeros_like(params[k]).at[rows].set(step) * -LR
    out_a[k] = acc[k].at[rows].set(a)
  return (out_p, out_a), None


FORMS = {'dense': dense_step,
         'dense, logging the gradient norm': functools.partial(dense_step, log_norm=True),
         'rows in place': rows_step,
         'rows, dense apply': functools.partial(rows_step, in_place=False)}


def start():
  rng = np.random.default_rng(0)
  params = {'P': rng.normal(size=(USERS, DIM)) * 0.1, 'bu': np.zeros((USERS, 1)),
            'Q': rng.normal(size=(ITEMS, DIM)) * 0.1, 'bi': np.zeros((ITEMS, 1))}
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  return params, {k: jnp.zeros_like(v) for k, v in params.items()}


def batches():
  rng = np.random.default_rng(1)
  return tuple(jnp.asarray(rng.integers(0, n, (STEPS, BATCH)), jnp.int32)
               for n in (USERS, ITEMS, ITEMS))


def make_call(step):
  @functools.partial(jax.jit, donate_argnums=(0,))
  def call(carry, xs):
    return lax.scan(step, carry, xs, unroll=_UNROLL.value)  # (carry, per-step norms or None)
  return call


def main(_):
  for flag in (_ROUNDS, _CALLS, _UNROLL):
    if flag.value < 1:
      raise app.UsageError(f'--{flag.name}={flag.value}: expected 1 or more')
  print(f'device: {yardstick.device_line()}')
  xs = batches()
  calls = {name: make_call(step) for name, step in FORMS.items()}
  ends = {name: call(start(), xs)[0] for name, call in calls.items()}
  best = {name: [] for name in FORMS}
  for _ in range(_ROUNDS.value):
    for name, call in calls.items():
      carry = jax.block_until_ready(call(start(), xs))[0]  # compiled; a fresh start to donate
      seconds = []
      for _ in range(_CALLS.value):
        t = time.perf_counter()
        carry = jax.block_until_ready(call(carry, xs))[0]
        seconds.append(time.perf_counter() - t)
      best[name].append(STEPS * BATCH / min(seconds))
  print('| Adagrad applied to | triples/s (best call; each round) | max abs param difference from dense after one call |')
  print('|---|---|---|')
  for name in FORMS:
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(ends[name][0]), jax.tree.leaves(ends['dense'][0])))
    print(f"| {name} | {', '.join(f'{r:,.0f}' for r in best[name])} | {diff:.1e} |", flush=True)


if __name__ == '__main__':
  app.run(main)
