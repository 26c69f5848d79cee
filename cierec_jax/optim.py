"""Adagrad for the recommender, Adam for the gate policies, nothing for frozen
subtrees (optax.partition)."""

import flax
import numpy as np
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


def staircase(lr, steps_per_epoch: int, decay_epochs: int, decay_rate: float):
  """lr * decay_rate ** floor(step / (decay_epochs * steps_per_epoch)); lr: a float or a scalar array."""
  return optax.exponential_decay(lr, transition_steps=max(1, decay_epochs * steps_per_epoch),
                                 decay_rate=decay_rate, staircase=True)


# The values a tuning grid varies. The train step takes them as inputs
# (optim.create's `hparams`) rather than as constants, so one compiled step
# serves every rate and penalty of a grid, and a grid compiles each model once.
HYPERPARAMETERS = ('lr', 'dqn_lr', 'weight_l2')


def hyperparameters(train) -> dict:
  """{name: float32 scalar} of config.train's HYPERPARAMETERS: a train step's `hparams`."""
  return {k: np.float32(train[k]) for k in HYPERPARAMETERS}


def create(train, steps_per_epoch: int, hparams=None, *, frozen=()) -> optax.GradientTransformation:
  """train: config.train (lr, dqn_lr, weight_l2, decay_epochs, decay_rate);
  hparams: the HYPERPARAMETERS' values, possibly traced (default: train's);
  frozen: the top-level params subtrees left unchanged (model.spec.frozen).
  Whether the weight penalty is applied at all follows train.weight_l2 > 0,
  so its value may be traced while the optimiser's structure is not."""
  h = hyperparameters(train) if hparams is None else hparams
  sched = lambda lr: staircase(lr, steps_per_epoch, int(train.decay_epochs), float(train.decay_rate))
  # Adagrad's accumulator starts at train.adagrad_initial_accumulator (0, as in
  # PyTorch); optax's 0.1 default (from TF) shrinks the first updates of the
  # small per-row embedding gradients by orders of magnitude.
  adagrad = optax.adagrad(sched(h['lr']),
                          initial_accumulator_value=float(train.adagrad_initial_accumulator),
                          eps=1e-10)
  if float(train.weight_l2) > 0:
    # (weight_l2 / 2) * |W|^2 on the layers' kernels, which train.l2 (batch rows
    # of the embedding tables) never reaches: VBPR's lambda_E on its projection.
    adagrad = optax.chain(optax.add_decayed_weights(h['weight_l2'], mask=kernels), adagrad)
  return optax.partition(
      {RECOMMENDER: adagrad,
       POLICIES: optax.adam(sched(h['dqn_lr'])),
       FROZEN: optax.set_to_zero()},
      lambda params: labels(params, tuple(frozen)))
