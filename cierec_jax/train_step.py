"""The train state and the one pure train step (DESIGN 4-5)."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from cierec_jax.models import conv_ops
from cierec_jax.models.recommender import POLICY


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes.

  policy_state: [2, A] s_{t-1}, the (R_v, R_s) policies' last softmax output;
  prev_policy_state: [2, A] s_{t-2}; prev_action: [2] int32 a_{t-1}.
  """
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  policy_state: jnp.ndarray
  prev_policy_state: jnp.ndarray
  prev_action: jnp.ndarray


# For programs that run once (initialisation): at XLA's default optimisation
# level ResNet18's initialisers compile in 23 s, at level 0 in 5 s, and run in
# milliseconds either way. Op by op (no jit) they compile some 300 small
# programs: 40 s. Values equal the op-by-op ones up to float rounding (6.6e-7).
RUN_ONCE = {'xla_backend_optimization_level': 0}


def init_variables(model, rngs, *args, **kwargs):
  """`model.init(rngs, *args, **kwargs)` as one RUN_ONCE program; kwargs
  (train=...) are static."""
  return jax.jit(functools.partial(model.init, **kwargs), compiler_options=RUN_ONCE)(rngs, *args)


def create_state(model, tx: optax.GradientTransformation, example_batch, seed: int) -> TrainState:
  """The initial state, built by one program (RUN_ONCE), or within the
  caller's program when the example batch is traced (jit takes compiler
  options only at the top level)."""
  a = len(model.spec.gr_actions)

  def init(key, example_batch):
    variables = model.init({'params': key, 'dropout': jax.random.fold_in(key, 1)}, example_batch,
                           None, train=True)
    params = variables['params']
    uniform = lambda: jnp.full((2, a), 1.0 / a, jnp.float32)  # distinct buffers: the state is donated
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      policy_state=uniform(), prev_policy_state=uniform(),
                      prev_action=jnp.zeros((2,), jnp.int32))
  if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(example_batch)):
    init = jax.jit(init, compiler_options=RUN_ONCE)
  return init(jax.random.key(seed), example_batch)


# Leaves of at least this many elements get a reduction of their own in
# global_norm; the smaller ones share one.
NORM_OWN_REDUCTION = 1 << 14


def global_norm(tree) -> jnp.ndarray:
  """sqrt of the sum of every leaf's squares. The small leaves (biases,
  BatchNorm scales) are concatenated into one reduction: optax.tree.norm
  reduces leaf by leaf, a kernel per leaf for XLA:CPU (the tiny CIERec step:
  1,509 computations, 1,351 with every leaf concatenated; its compile 14.2 ->
  13.0 s). The large ones (embedding tables, kernels) are reduced where they
  are: concatenated, each step copied its gradient once more, and in MF's
  step on MovieLens that copy and its 170,626-element reduction made the
  norm, under train.record_ends' lax.cond, 35% of the step (73 against 52 ms
  a call of 233 steps). Returns a float32 scalar; equals optax.tree.norm up
  to the summation order."""
  leaves = jax.tree.leaves(tree)
  small = [jnp.ravel(x) for x in leaves if x.size < NORM_OWN_REDUCTION]
  # Squared after the concatenation: squared before, each leaf's square is a kernel again.
  sums = [jnp.sum(jnp.square(x)) for x in leaves if x.size >= NORM_OWN_REDUCTION]
  if small:
    sums.append(jnp.sum(jnp.square(jnp.concatenate(small))))
  return jnp.sqrt(sum(sums[1:], sums[0]))


def bpr(diff):
  """-log sigmoid(diff), elementwise."""
  return -jax.nn.log_sigmoid(diff)


def _weighted_mean(x, w, count):
  return jnp.sum(w * x) / count


BUILT_IN = ('bpr', 'l2', 'loss_v', 'loss_s')  # the step's own terms; the rest are the model's losses


def _total(terms: dict, with_bpr: bool, l2: float, extra) -> jnp.ndarray:
  """The loss trained on: BPR (unless the model trains on its own losses
  only), the weighted L2 term and the model's extra losses, named by `extra`."""
  return (terms['bpr'] if with_bpr else 0.0) + l2 * terms['l2'] + sum(terms[k] for k in extra)


def train_step(state: TrainState, batch, rng, hparams, *, model, optimizer, l2: float,
               axis_name: str | None = None, shard_sum=None, grad_norm_at=None):
  """One BPR step with the gradient-regularization gates (DESIGN 4, steps 1-4).

  batch: the sampler's arrays (weight [B] marks filler rows with 0). rng: this
  step's key, the same on every device; the model's 'dropout' stream comes
  from it. hparams: optim.HYPERPARAMETERS' float32 scalars, inputs rather than
  constants so that one program serves a tuning grid; optimizer(hparams) is
  the step's optax transformation (optim.create). The model's extra
  per-example `losses` (registry contract) are averaged like BPR and added to
  the loss; BPR itself is added unless `spec.bpr` is False (then it is only
  logged). Every term is a sum over rows divided by the batch's total weight,
  so the terms of a partition of the batch add up to the batch's: under pmap
  (`axis_name`) psum adds the devices' parts; `shard_sum` (a
  `parallel.ShardedSum`) adds fixed shards' parts in a fixed order, each
  shard with its own BatchNorm statistics.
  grad_norm_at(steps_done) -> bool: the steps whose gradient norm is
  measured (None: all); the others log NaN. Returns (new state, metrics of scalars).
  """
  spec = model.spec
  count = jnp.sum(batch['weight'])
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name)
  count = jnp.maximum(count, 1e-9)  # an all-filler batch has loss 0

  actions = jnp.asarray(spec.gr_actions, jnp.float32)
  dropout_key = jax.random.fold_in(rng, 1)
  scales = None
  if spec.gr:
    # Step 1: pi_t = pi(s_{t-1}); a_t ~ pi_t; this step's backward uses lambda[a_t].
    probs = model.apply({'params': state.params}, state.policy_state, method='policy_probs')
    action = jax.random.categorical(rng, jnp.log(probs), axis=-1).astype(jnp.int32)
    scales = actions[action]

  def loss_fn(params, batch_stats, part, key, count, scales):
    """This part of the batch's share of the loss and of each logged term."""
    w = part['weight']
    variables = {'params': params}
    mutable = []
    if batch_stats:
      variables['batch_stats'] = batch_stats
      mutable = ['batch_stats']
    out, new_vars = model.apply(variables, part, scales, train=True, mutable=mutable,
                                rngs={'dropout': key})
    terms = {'bpr': _weighted_mean(bpr(out['pos'] - out['neg']), w, count),
             'l2': _weighted_mean(out['reg'], w, count),
             **{name: _weighted_mean(v, w, count) for name, v in out.get('losses', {}).items()}}
    if spec.gr:
      # Step 2: branch losses, rewards only (no gradient).
      p = jax.lax.stop_gradient(out['p'])
      for k in ('v', 's'):
        branch = _weighted_mean(bpr(jnp.sum(p * (out[f'{k}_pos'] - out[f'{k}_neg']), -1)), w, count)
        terms[f'loss_{k}'] = jax.lax.stop_gradient(branch)
    loss = _total(terms, spec.bpr, l2, out.get('losses', {}))
    # Running BatchNorm statistics: this part's update, weighted by its share of the rows.
    stats = jax.tree.map(lambda x: x * (w.shape[0] / batch['weight'].shape[0]),
                         new_vars.get('batch_stats', {}))
    return loss, (terms, stats)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if shard_sum is None:
    grads, (terms, batch_stats) = grad_fn(state.params, state.batch_stats, batch, dropout_key,
                                          count, scales)
  else:
    grads, (terms, batch_stats) = shard_sum(
        lambda part, key, *operands: grad_fn(operands[0], operands[1], part, key, *operands[2:]),
        batch, dropout_key, state.params, state.batch_stats, count, scales)
  if axis_name is not None:
    # BatchNorm's statistics already span the devices (its axis_name).
    grads, terms = jax.lax.psum((grads, terms), axis_name)
  metrics = dict(terms)
  # before the policy loss, which only trains the policies
  metrics['loss'] = _total(terms, spec.bpr, l2, [k for k in terms if k not in BUILT_IN])
  if spec.gr:
    # Step 3 (eq. 6): the previous action's loss given this step's branch
    # losses; its gradient reaches the policies only.
    branch = jnp.stack([terms['loss_v'], terms['loss_s']])

    def policy_loss(policy_params):
      prev = model.apply({'params': {**state.params, POLICY: policy_params}},
                         state.prev_policy_state, method='policy_probs')
      chosen = jnp.take_along_axis(prev, state.prev_action[:, None], axis=1)[:, 0]
      return jnp.sum(bpr(chosen * jnp.exp(-branch))) * (state.step > 0)

    metrics['dqn'], policy_grads = jax.value_and_grad(policy_loss)(state.params[POLICY])
    grads = {**grads, POLICY: jax.tree.map(jnp.add, grads[POLICY], policy_grads)}
  updates, opt_state = optimizer(hparams).update(grads, state.opt_state, state.params)
  if grad_norm_at is None:
    metrics['grad_norm'] = global_norm(grads)
  else:
    # Only where it is logged: on MF's step the norm, reading every table
    # again, costs ~15% of the step.
    metrics['grad_norm'] = jax.lax.cond(grad_norm_at(state.step + 1), global_norm,
                                        lambda _: jnp.full((), jnp.nan, jnp.float32), grads)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state, batch_stats=batch_stats)
  if spec.gr:
    # Step 4: carry (s_{t-1}, a_t) and s_t = pi_t.
    metrics.update(action_v=action[0], action_s=action[1], lambda_v=scales[0], lambda_s=scales[1])
    new_state = new_state.replace(prev_policy_state=state.policy_state, prev_action=action,
                                  policy_state=jax.lax.stop_gradient(probs))
  return new_state, metrics


def make_train_step(model, optimizer, l2, axis_name=None, shard_sum=None, grad_norm_at=None):
  """step(state, batch, rng, hparams); optimizer(hparams) -> optax.GradientTransformation."""
  return functools.partial(train_step, model=model, optimizer=optimizer, l2=l2, axis_name=axis_name,
                           shard_sum=shard_sum, grad_norm_at=grad_norm_at)


def scan_steps(step_fn, item_inputs=None, unroll: int = 1):
  """Several optimizer steps per device call (`train.steps_per_call`).

  Returns call(state, batches, items, key, first_step, hparams) -> (state, metrics):
  a lax.scan of `step_fn` over batches stacked [n, B, ...]; metrics are
  stacked [n]. Step i uses the rng fold_in(key, first_step + i), exactly as one
  step per call does. `item_inputs(batch, items)` (sampler.device_item_inputs)
  adds or finishes each batch's item inputs inside the step, from item tables
  held on the device or (items=None) from the batch's raw items; without it
  the batches carry model-ready inputs. `unroll` steps per loop iteration
  (scan_unroll).
  """
  def call(state, batches, items, key, first_step, hparams):
    def one(state, xs):
      i, batch = xs
      if item_inputs is not None:
        batch = item_inputs(batch, items)
      return step_fn(state, batch, jax.random.fold_in(key, first_step + i), hparams)
    n = jax.tree.leaves(batches)[0].shape[0]
    if n == 1:
      # No loop for one step: with model.conv_impl='xla', XLA:CPU runs the
      # ResNet's gradient convolutions inside a loop body ~14x slower
      # (conv_ops._native_conv says why; the other conv_impls avoid it).
      state, metrics = one(state, (jnp.zeros((), jnp.int32), jax.tree.map(lambda x: x[0], batches)))
      return state, jax.tree.map(lambda x: x[None], metrics)
    return jax.lax.scan(one, state, (jnp.arange(n), batches), unroll=min(unroll, n))
  return call


def scan_unroll(spec) -> int:
  """Steps per loop iteration of a call: 4 for models without a content
  encoder, whose steps are short enough that XLA:CPU's per-iteration cost
  shows (MF on MovieLens: 1.08M -> 1.19M triples/s of device time); 1 for the
  others, whose longer steps gain nothing and whose bodies would take 4 times
  as long to compile (XLA warned of a very slow compile for CIERec on features)."""
  return 4 if spec.encoder is None else 1


# Image models' steps per call (auto): a call's fixed costs (its scratch memory
# faulted in afresh, the batch's transfer, the host's loop) then come once per
# 4-8 steps. CIERec(MF) forward+backward in a loop: 0.145 against 0.152 s a
# step (32x32, 8 a call), 4.91 against 5.34 s (224x224, 4 a call).
ENCODER_STEPS_PER_CALL = 8


def steps_per_call(setting: int, spec, steps_per_epoch: int) -> int:
  """train.steps_per_call, or for 0 (auto): embedding models (steps of
  microseconds) up to 256; image models the largest divisor of the epoch's
  steps from 4 to ENCODER_STEPS_PER_CALL, so that every training call has the
  same length and one program, else ENCODER_STEPS_PER_CALL (the epoch's last,
  shorter call compiles once more). Image models with model.conv_impl='xla'
  on CPU keep 1: XLA's own gradient convolutions run on a naive kernel inside
  a loop (conv_ops._native_conv)."""
  if setting < 0:
    raise ValueError(f'train.steps_per_call={setting}: expected 0 (auto) or a positive count')
  if setting:
    return setting
  if spec.encoder != 'resnet18':
    return max(1, min(256, steps_per_epoch))
  if conv_ops.gradients_slow_in_loops(spec.conv_impl):
    return 1
  top = ENCODER_STEPS_PER_CALL
  divisors = [n for n in range(top, top // 2 - 1, -1) if steps_per_epoch % n == 0]
  return max(1, min(steps_per_epoch, divisors[0] if divisors else top))
