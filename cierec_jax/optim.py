"""Adagrad for the recommender, Adam for the gate policies (optax.partition)."""

import flax
import optax

from cierec_jax.models.recommender import POLICY

RECOMMENDER, POLICIES = 'adagrad', 'adam'


def labels(params):
  """Each leaf's optimiser: POLICIES under params['policy'], RECOMMENDER elsewhere."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: POLICIES if k[0] == POLICY else RECOMMENDER for k in flat})


def staircase(lr: float, steps_per_epoch: int, decay_epochs: int, decay_rate: float):
  """lr * decay_rate ** floor(step / (decay_epochs * steps_per_epoch))."""
  return optax.exponential_decay(lr, transition_steps=max(1, decay_epochs * steps_per_epoch),
                                 decay_rate=decay_rate, staircase=True)


def create(train, steps_per_epoch: int) -> optax.GradientTransformation:
  """train: config.train (lr, dqn_lr, decay_epochs, decay_rate)."""
  sched = lambda lr: staircase(lr, steps_per_epoch, int(train.decay_epochs), float(train.decay_rate))
  # Adagrad's accumulator starts at train.adagrad_initial_accumulator (0, as in
  # PyTorch); optax's 0.1 default (from TF) shrinks the first updates of the
  # small per-row embedding gradients by orders of magnitude.
  adagrad = optax.adagrad(sched(float(train.lr)),
                          initial_accumulator_value=float(train.adagrad_initial_accumulator),
                          eps=1e-10)
  return optax.partition(
      {RECOMMENDER: adagrad,
       POLICIES: optax.adam(sched(float(train.dqn_lr)))},
      labels)
