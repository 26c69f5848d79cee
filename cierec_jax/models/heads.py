"""Multi-modal fusion (eq. 7) and the MF / VBPR scoring heads (eq. 8)."""

import flax.linen as nn
import jax.numpy as jnp


class Fusion(nn.Module):
  """f_i = leaky_relu(Dense_d([q_i; v_i; s_i])) over the parts present; one part
  passes through unchanged (no Dense)."""
  embed_dim: int
  num_parts: int

  @nn.compact
  def __call__(self, parts):
    """parts: list of [..., d] -> f: [..., d]."""
    if len(parts) != self.num_parts:
      raise ValueError(f'Fusion built for {self.num_parts} parts, got {len(parts)}')
    if self.num_parts == 1:
      return parts[0]
    # Parts may broadcast against each other (item parts [1, I, d] at evaluation).
    return nn.leaky_relu(nn.Dense(self.embed_dim, name='mlp_f')(
        jnp.concatenate(jnp.broadcast_arrays(*parts), axis=-1)))


def mf_score(alpha, b_u, b_i, p_u, f_i):
  """y = alpha + b_u + b_i + p_u . f_i (eq. 8, MF). b_*: [...]; p_u, f_i: [..., d]."""
  return alpha + b_u + b_i + jnp.sum(p_u * f_i, axis=-1)


def vbpr_content(w, a_u, c):
  """VBPR's content terms b_c + a_u . c with b_c = w . c. a_u, c: [..., Dc]; w: [Dc]."""
  return jnp.sum((a_u + w) * c, axis=-1)
