"""Adagrad for the recommender, Adam for the gate policies, nothing for frozen
subtrees (optax.partition)."""

import flax
import optax

from cierec_jax.models.recommender import POLICY

RECOMMENDER, POLICIES, FROZEN = 'adagrad', 'adam', 'frozen'


def labels(params, frozen=()):
  """Each leaf's optimiser: POLICIES under params['policy'], FROZEN under the
  top-level subtrees named in `frozen`, RECOMMENDER elsewhere."""
  flat = flax.traverse_util.flatten_dict(params)
  label = lambda k: POLICIES if k[0] == POLICY else FROZEN if k[0] in frozen else RECOMMENDER
  return flax.traverse_util.unflatten_dict({k: label(k) for k in flat})


def kernels(params):
  """True for the weight matrices and convolution kernels (leaves named 'kernel')."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: k[-1] == 'kernel' for k in flat})


def staircase(lr: float, steps_per_epoch: int, decay_epochs: int, decay_rate: float):
  """lr * decay_rate ** floor(step / (decay_epochs * steps_per_epoch))."""
  return optax.exponential_decay(lr, transition_steps=max(1, decay_epochs * steps_per_epoch),
                                 decay_rate=decay_rate, staircase=True)


def create(train, steps_per_epoch: int, frozen=()) -> optax.GradientTransformation:
  """train: config.train (lr, dqn_lr, decay_epochs, decay_rate); frozen: the
  top-level params subtrees left unchanged (model.spec.frozen)."""
  sched = lambda lr: staircase(lr, steps_per_epoch, int(train.decay_epochs), float(train.decay_rate))
  # Adagrad's accumulator starts at train.adagrad_initial_accumulator (0, as in
  # PyTorch); optax's 0.1 default (from TF) shrinks the first updates of the
  # small per-row embedding gradients by orders of magnitude.
  adagrad = optax.adagrad(sched(float(train.lr)),
                          initial_accumulator_value=float(train.adagrad_initial_accumulator),
                          eps=1e-10)
  weight_l2 = float(train.weight_l2)
  if weight_l2 > 0:
    # (weight_l2 / 2) * |W|^2 on the layers' kernels, which train.l2 (batch rows
    # of the embedding tables) never reaches: VBPR's lambda_E on its projection.
    adagrad = optax.chain(optax.add_decayed_weights(weight_l2, mask=kernels), adagrad)
  return optax.partition(
      {RECOMMENDER: adagrad,
       POLICIES: optax.adam(sched(float(train.dqn_lr))),
       FROZEN: optax.set_to_zero()},
      lambda params: labels(params, tuple(frozen)))
