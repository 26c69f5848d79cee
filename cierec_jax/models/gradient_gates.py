"""Gradient-regularization gates: identity forward, cotangent scaled by lambda."""

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def scale_gradient(x, lam):
  """Returns x; backward multiplies x's cotangent by lam (a scalar) and gives
  lam no gradient."""
  del lam
  return x


def _fwd(x, lam):
  return x, lam


def _bwd(lam, g):
  return g * lam.astype(g.dtype), jnp.zeros_like(lam)


scale_gradient.defvjp(_fwd, _bwd)


class GatePolicy(nn.Module):
  """pi(s) = softmax(Dense_A(s)): a distribution over the A lambda actions."""
  num_actions: int = 5

  @nn.compact
  def __call__(self, state):
    """state: [A] float32 (the previous softmax output) -> [A] probabilities."""
    # exp(log_softmax): no division, which XLA may compile differently per device count.
    return jnp.exp(nn.log_softmax(nn.Dense(self.num_actions, name='mlp_dqn')(state)))


class GatePolicies(nn.Module):
  """The visual (R_v) and semantic (R_s) gates' policies, one subtree of params."""
  num_actions: int = 5

  @nn.compact
  def __call__(self, states):
    """states: [2, A] -> [2, A] probabilities, row 0 for R_v, row 1 for R_s."""
    return jnp.stack([GatePolicy(self.num_actions, name='visual')(states[0]),
                      GatePolicy(self.num_actions, name='semantic')(states[1])])
