"""The visual-aware gate (eq. 3), the inference gate (eq. 4) and their plain forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp

EPS = 1e-12


def safe_normalize(x, eps: float = EPS):
  """x / max(||x||_2, eps) over the last axis; a zero vector stays zero.

  Written as sqrt(max(||x||^2, eps^2)) so that the gradient at a zero vector
  is finite (the gradient of ||x|| itself is 0/0 there).
  """
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


ACTIVATIONS = ('sigmoid', 'identity')


def activation(name: str):
  """delta's non-linearity: 'sigmoid', or 'identity' (the paper's literal FC layer)."""
  if name == 'sigmoid':
    return nn.sigmoid
  if name == 'identity':
    return lambda x: x
  raise ValueError(f'model.gate_activation={name!r}: expected one of {ACTIVATIONS}')


class VisualAwareGate(nn.Module):
  """v_i = leaky_relu(Dense_d(norm(e_i * delta_D([p_u; e_i; g_v])))), eq. 3.

  delta's layer is linear in [p_u; e_i; g_v], so its kernel is kept as three
  blocks: scoring adds a per-user, a per-item and a constant part per pair
  (`user_part`, `item_part`, `const_part`, `from_parts`) instead of redoing
  the [d + D + d, D] product for each of the B x C pairs.
  """
  embed_dim: int
  feature_dim: int
  gate_activation: str = 'sigmoid'

  def setup(self):
    d, D = self.embed_dim, self.feature_dim
    init = nn.initializers.lecun_normal()
    self.kernel_user = self.param('kernel_user', init, (d, D))
    self.kernel_item = self.param('kernel_item', init, (D, D))
    self.kernel_gate = self.param('kernel_gate', init, (d, D))
    self.bias = self.param('bias', nn.initializers.zeros, (D,))
    self.g_v = self.param('g_v', nn.initializers.normal(0.1), (d,))
    self.out = nn.Dense(d, name='mlp_v')

  def __call__(self, p_u, e):
    """Direct form. p_u: [..., d]; e: [..., D] -> v: [..., d]."""
    g = jnp.broadcast_to(self.g_v, p_u.shape[:-1] + self.g_v.shape)
    kernel = jnp.concatenate([self.kernel_user, self.kernel_item, self.kernel_gate], axis=0)
    pre = jnp.concatenate([p_u, e, g], axis=-1) @ kernel + self.bias
    return self.from_parts(e, pre)

  def user_part(self, p_u):
    """[..., d] -> [..., D]."""
    return p_u @ self.kernel_user

  def item_part(self, e):
    """[..., D] -> [..., D]."""
    return e @ self.kernel_item

  def const_part(self):
    """[D]."""
    return self.g_v @ self.kernel_gate + self.bias

  def from_parts(self, e, pre):
    """e: [..., D]; pre: [..., D] the gate's pre-activation -> v: [..., d]."""
    return nn.leaky_relu(self.out(self._gated(e, pre)))

  def from_parts_fn(self):
    """`from_parts` as a pure function of arrays, for a JAX loop (where module
    calls are not allowed); only once the parameters exist."""
    dense = self.out.variables['params']
    return lambda e, pre: nn.leaky_relu(self._gated(e, pre) @ dense['kernel'] + dense['bias'])

  def _gated(self, e, pre):
    return safe_normalize(e * activation(self.gate_activation)(pre))


class InferenceGate(nn.Module):
  """c_i = norm(e_i * delta_D([e_i; g_s])), eq. 4."""
  embed_dim: int
  feature_dim: int
  gate_activation: str = 'sigmoid'

  @nn.compact
  def __call__(self, e):
    """e: [..., D] -> c: [..., D]."""
    g_s = self.param('g_s', nn.initializers.normal(0.1), (self.embed_dim,))
    g = jnp.broadcast_to(g_s, e.shape[:-1] + g_s.shape)
    gate = activation(self.gate_activation)(nn.Dense(self.feature_dim, name='delta_s')(
        jnp.concatenate([e, g], axis=-1)))
    return safe_normalize(e * gate)


class PlainVisual(nn.Module):
  """TA off: v_i = leaky_relu(Dense_d(e_i))."""
  embed_dim: int

  @nn.compact
  def __call__(self, e):
    return nn.leaky_relu(nn.Dense(self.embed_dim, name='mlp_v')(e))
