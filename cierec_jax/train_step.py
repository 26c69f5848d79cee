"""The train state and the one pure train step (DESIGN 4-5)."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax



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


def create_state(model, tx: optax.GradientTransformation, example_batch, seed: int) -> TrainState:
  key = jax.random.key(seed)
  variables = model.init({'params': key, 'dropout': jax.random.fold_in(key, 1)}, example_batch, None,
                         train=True)
  params = variables['params']
  a = len(model.spec.gr_actions)
  uniform = lambda: jnp.full((2, a), 1.0 / a, jnp.float32)  # distinct buffers: the state is donated
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                    policy_state=uniform(), prev_policy_state=uniform(),
                    prev_action=jnp.zeros((2,), jnp.int32))


def bpr(diff):
  """-log sigmoid(diff), elementwise."""
  return -jax.nn.log_sigmoid(diff)


def _weighted_mean(x, w, count):
  return jnp.sum(w * x) / count


def train_step(state: TrainState, batch, rng, *, model, tx: optax.GradientTransformation,
               l2: float, axis_name: str | None = None):
  """One BPR step with the gradient-regularization gates (DESIGN 4, steps 1-4).

  batch: the sampler's arrays (weight [B] marks filler rows with 0). rng: this
  step's key, the same on every device; the model's 'dropout' stream comes
  from it. The model's extra per-example `losses` (registry contract) are
  averaged like BPR and added to the loss; BPR itself is added unless
  `spec.bpr` is False (then it is only logged). Under pmap (`axis_name`), each device
  holds a slice; the loss is normalised by the global weight so that pmean of
  the gradients is the gradient of the global mean.
  Returns (new state, metrics of scalars).
  """
  spec = model.spec
  w = batch['weight']
  count = jnp.sum(w)
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name) / jax.lax.psum(1, axis_name)
  count = jnp.maximum(count, 1e-9)  # an all-filler batch has loss 0

  actions = jnp.asarray(spec.gr_actions, jnp.float32)
  dropout_key = jax.random.fold_in(rng, 1)
  scales = None
  if spec.gr:
    # Step 1: pi_t = pi(s_{t-1}); a_t ~ pi_t; this step's backward uses lambda[a_t].
    probs = model.apply({'params': state.params}, state.policy_state, method='policy_probs')
    action = jax.random.categorical(rng, jnp.log(probs), axis=-1).astype(jnp.int32)
    scales = actions[action]

  def loss_fn(params):
    variables = {'params': params}
    mutable = []
    if state.batch_stats:
      variables['batch_stats'] = state.batch_stats
      mutable = ['batch_stats']
    out, new_vars = model.apply(variables, batch, scales, train=True, mutable=mutable,
                                rngs={'dropout': dropout_key})
    rec = _weighted_mean(bpr(out['pos'] - out['neg']), w, count)
    reg = _weighted_mean(out['reg'], w, count)
    extra = {name: _weighted_mean(v, w, count) for name, v in out.get('losses', {}).items()}
    loss = (rec if spec.bpr else 0.0) + l2 * reg + sum(extra.values())
    aux = {'bpr': rec, 'l2': reg, **extra}
    aux['loss'] = loss  # before the policy loss, which only trains the policies
    if spec.gr:
      # Step 2: branch losses, rewards only (no gradient).
      p = jax.lax.stop_gradient(out['p'])
      branch = jnp.stack([
          _weighted_mean(bpr(jnp.sum(p * (out[f'{k}_pos'] - out[f'{k}_neg']), -1)), w, count)
          for k in ('v', 's')])
      branch = jax.lax.stop_gradient(branch)
      if axis_name is not None:
        branch = jax.lax.pmean(branch, axis_name)
      # Step 3 (eq. 6): the previous action's loss, gradient into the policy only.
      prev = model.apply({'params': params}, state.prev_policy_state, method='policy_probs')
      chosen = jnp.take_along_axis(prev, state.prev_action[:, None], axis=1)[:, 0]
      dqn = jnp.sum(bpr(chosen * jnp.exp(-branch))) * (state.step > 0)
      loss = loss + dqn
      aux.update(loss_v=branch[0], loss_s=branch[1], dqn=dqn)
    return loss, (aux, new_vars)

  grads, (aux, new_vars) = jax.grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    # The rec. loss is already normalised globally and the policy loss is the
    # same on every device, so pmean gives the gradient of the global loss.
    grads, aux = jax.lax.pmean((grads, aux), axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {**aux, 'grad_norm': optax.tree.norm(grads)}
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            batch_stats=new_vars.get('batch_stats', state.batch_stats))
  if spec.gr:
    # Step 4: carry (s_{t-1}, a_t) and s_t = pi_t.
    metrics.update(action_v=action[0], action_s=action[1], lambda_v=scales[0], lambda_s=scales[1])
    new_state = new_state.replace(prev_policy_state=state.policy_state, prev_action=action,
                                  policy_state=jax.lax.stop_gradient(probs))
  return new_state, metrics


def make_train_step(model, tx, l2, axis_name=None):
  return functools.partial(train_step, model=model, tx=tx, l2=l2, axis_name=axis_name)


def scan_steps(step_fn, item_inputs=None):
  """Several optimizer steps per device call (`train.steps_per_call`).

  Returns call(state, batches, items, key, first_step) -> (state, metrics):
  a lax.scan of `step_fn` over batches stacked [n, B, ...]; metrics are
  stacked [n]. Step i uses the rng fold_in(key, first_step + i), exactly as one
  step per call does. `item_inputs(batch, items)` adds each batch's item inputs
  inside the step from item tables held on the device (items=None: the batches
  carry them).
  """
  def call(state, batches, items, key, first_step):
    def one(state, xs):
      i, batch = xs
      if items is not None:
        batch = item_inputs(batch, items)
      return step_fn(state, batch, jax.random.fold_in(key, first_step + i))
    n = jax.tree.leaves(batches)[0].shape[0]
    return jax.lax.scan(one, state, (jnp.arange(n), batches))
  return call


def steps_per_call(setting: int, spec, steps_per_epoch: int) -> int:
  """train.steps_per_call, or for 0 (auto): 1 for image encoders, whose step
  dwarfs a dispatch, else up to 256 (embedding models' steps take microseconds)."""
  if setting < 0:
    raise ValueError(f'train.steps_per_call={setting}: expected 0 (auto) or a positive count')
  if setting:
    return setting
  return 1 if spec.encoder == 'resnet18' else min(256, steps_per_epoch)
