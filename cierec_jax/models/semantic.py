"""Semantic fusion (eq. 5): an LSTM over [x_0, element embeddings...]."""

import flax.linen as nn
import jax.numpy as jnp

from cierec_jax.models import embed


class SemanticFusion(nn.Module):
  """s_i = last LSTM hidden state over [x_0, x_1..x_L] with length 1 + L_i.

  x_0 = Dense_d(c_i) for CIERec, or a learned start token when `c` is None
  (mf_semantics, which reads the annotation alone). Tokens past an item's
  length never reach s_i, so padding cannot change it. With lengths of 0
  (PI off, annotations withheld, or an empty annotation) the sequence is
  [x_0] alone.
  """
  embed_dim: int
  num_elements: int
  use_tokens: bool = True  # False (PI off): no element embeddings at all

  @nn.compact
  def __call__(self, c, elements, lengths):
    """c: [N, Dc] or None; elements: [N, L] int32; lengths: [N] int32 -> s: [N, d]."""
    d = self.embed_dim
    if c is None:
      start = self.param('start', nn.initializers.normal(0.1), (d,))
      x0 = jnp.broadcast_to(start, (elements.shape[0], d))
    else:
      x0 = nn.Dense(d, name='x0')(c)
    seq = x0[:, None, :]
    lengths = jnp.minimum(lengths, elements.shape[1])
    if self.use_tokens:
      tokens = embed.Embed(self.num_elements, d, embedding_init=nn.initializers.normal(0.1),
                        name='elements')(elements)
      seq = jnp.concatenate([seq, tokens], axis=1)
    else:
      lengths = jnp.zeros_like(lengths)
    carry, _ = nn.RNN(nn.LSTMCell(d, name='lstm'), return_carry=True)(seq, seq_lengths=1 + lengths)
    return carry[1]  # LSTMCell carry is (c, h); s_i is the hidden state h
