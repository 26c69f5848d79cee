"""Fast-gradient adversarial perturbations: APR (He et al., SIGIR 2018) and AMR
(Tang et al., TKDE 2019).

The perturbation of a table (user or item embeddings, item features) is
epsilon times the gradient of the batch's BPR loss w.r.t. that table,
L2-normalised per row, as in the authors' code (`tf.nn.l2_normalize(grad, 1)`):
every row the batch touches moves by exactly epsilon, rows it does not touch
not at all. A row looked up several times (an item that is a positive in one
triple and a negative in another) gets one perturbation from the sum of its
lookups' gradients, which is the gradient w.r.t. the table row.
"""

import dataclasses

import jax
import jax.numpy as jnp

from cierec_jax.models import gates
from cierec_jax.models import in_batch
from cierec_jax.models import spec as spec_lib


def fast_gradient(loss_fn, ids, rows, epsilon: float, axis_name=None):
  """The perturbations that maximise `loss_fn` to first order, per table row.

  ids: per table, a list of [B] int lookups (e.g. [[users], [pos, neg]]);
  rows: the same nesting of [B, k] arrays, the looked-up rows (only their
  shapes are read); loss_fn: deltas (that nesting) -> scalar, the weighted sum
  of the batch's BPR terms with each lookup moved by its delta.
  Returns deltas of that nesting, ||delta|| = epsilon for each row with a
  non-zero gradient, stop-gradient (the adversary is not trained through).
  """
  zeros = jax.tree.map(jnp.zeros_like, rows)
  grads = jax.grad(loss_fn)(zeros)
  out = []
  for table_ids, table_grads in zip(ids, grads):
    sizes = [len(i) for i in table_ids]
    summed = in_batch.per_row_sum(jnp.concatenate(table_ids), jnp.concatenate(table_grads), axis_name)
    delta = epsilon * gates.safe_normalize(summed)
    out.append(list(jnp.split(delta, [sum(sizes[:n]) for n in range(1, len(sizes))])))
  return jax.lax.stop_gradient(out)


def outputs(perturbed_bpr, weights, ids, rows, epsilon: float, weight: float, axis_name=None) -> dict:
  """The adversarial model's extra outputs.

  perturbed_bpr: deltas -> [B] BPR of the triples at the perturbed point;
  weights: [B] the batch weights (filler rows, weight 0, do not steer the
  adversary); ids, rows: as in fast_gradient. Returns {'losses':
  {'adversarial': [B] weight * BPR at the perturbation}, 'deltas': the
  perturbations}.
  """
  deltas = fast_gradient(lambda d: jnp.sum(weights * perturbed_bpr(d)), ids, rows, epsilon, axis_name)
  return {'losses': {'adversarial': weight * perturbed_bpr(deltas)}, 'deltas': deltas}


def builder(module, base: str):
  """registry build function of an adversarial `module` over Recommender model `base`."""

  def build(model, *, axis_name=None, **dims):
    return module(base_spec(model, base, **dims), axis_name=axis_name,
                  epsilon=float(model.adv_epsilon), weight=float(model.adv_weight))

  return build


def base_spec(model, base: str, **dims) -> spec_lib.ModelSpec:
  """The spec of Recommender model `base` (e.g. 'mf') for config.model,
  renamed to model.name: the adversarial models keep their base's parameters
  exactly, so a trained base run initialises them (train.init_from)."""
  if float(model.adv_epsilon) < 0 or float(model.adv_weight) < 0:
    raise ValueError(f'model.adv_epsilon={model.adv_epsilon} and model.adv_weight='
                     f'{model.adv_weight} must be >= 0')
  c = model.copy_and_resolve_references()
  c.name = base
  return dataclasses.replace(spec_lib.create(c, **dims), name=model.name, batch_wide=True)
