"""User-conditioned additive attention (VECF's regions, HAFR's ingredients and
components) and the chunked candidate scoring its [B, C, M, A] terms need."""

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
CHUNK_FLOATS = 2**24  # largest [B, c, ...] intermediate of a chunk: 64 MiB of float32


class AdditiveAttention(nn.Module):
  """Logits a_l = w . act(W_q query + W_k key_l + b) over a set of keys.

  The layer is linear in [query; key], so its two blocks are applied apart:
  scoring computes the user side once per user (`query_part`) and the item
  side once per item (`key_part`), and only act(. + .) . w per pair (`logits`).
  w starts at ones, as in the HAFR authors' code.
  """
  hidden: int
  activation: str  # a key of ACTIVATIONS

  def setup(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'attention activation {self.activation!r}: expected one of {tuple(ACTIVATIONS)}')
    self.query = nn.Dense(self.hidden, use_bias=False, name='query')
    self.key = nn.Dense(self.hidden, name='key')
    self.score = self.param('score', nn.initializers.ones, (self.hidden,))

  def query_part(self, q):
    """[..., Dq] -> [..., A]."""
    return self.query(q)

  def key_part(self, k):
    """[..., Dk] -> [..., A] (with the bias)."""
    return self.key(k)

  def score_vector(self):
    """[A] the vector w, for `additive_logits` inside a plain JAX transform."""
    return self.score

  def logits(self, query_part, key_part):
    """Parts that broadcast against each other, [..., A] -> [...] logits."""
    return additive_logits(query_part, key_part, self.score, self.activation)

  def __call__(self, q, k, mask):
    """Direct form. q: [B, Dq]; k: [B, M, Dk]; mask: [B, M] bool -> weights [B, M]."""
    return masked_softmax(self.logits(self.query(q)[:, None], self.key(k)), mask)


def additive_logits(query_part, key_part, w, activation: str):
  """act(query_part + key_part) . w, a pure function of arrays: [..., A] -> [...]."""
  return ACTIVATIONS[activation](query_part + key_part) @ w


def masked_softmax(logits, mask):
  """Softmax over the last axis among `mask`; all weights 0 where nothing is masked in.

  logits: [..., M] float32; mask: [..., M] bool -> [..., M] float32.
  """
  weights = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
  return weights * mask


def over_candidate_chunks(fn, candidates, floats_per_candidate: int):
  """fn(candidates [B, c]) -> [B, c, ...], applied to column chunks of candidates
  [B, C] so that no chunk's intermediates exceed CHUNK_FLOATS; fn must be a
  pure function of arrays (no module calls inside a JAX loop).
  """
  b, c = candidates.shape
  chunk = max(1, min(c, CHUNK_FLOATS // max(1, b * floats_per_candidate)))
  if chunk == c:
    return fn(candidates)
  n = -(-c // chunk)
  blocks = jnp.pad(candidates, ((0, 0), (0, n * chunk - c)))  # pads with item 0; cut below
  out = jax.lax.map(fn, blocks.reshape(b, n, chunk).swapaxes(0, 1))  # [n, B, chunk, ...]
  out = out.swapaxes(0, 1)
  return out.reshape((b, n * chunk) + out.shape[3:])[:, :c]


def over_item_chunks(fn, tables, floats_per_item: int):
  """fn(*table chunks [c, ...]) -> [B, c, ...], applied to row chunks of the
  item tables (each [I, ...]) so that no chunk's intermediates exceed
  CHUNK_FLOATS; concatenated to [B, I, ...]. Every user meets each chunk once:
  the rows are read per chunk, not gathered into a [B, I, ...] copy per user.
  """
  i = tables[0].shape[0]
  chunk = max(1, min(i, CHUNK_FLOATS // max(1, floats_per_item)))
  if chunk == i:
    return fn(*tables)
  n = -(-i // chunk)
  blocks = [jnp.pad(t, [(0, n * chunk - i)] + [(0, 0)] * (t.ndim - 1)).reshape((n, chunk) + t.shape[1:])
            for t in tables]  # padded rows are cut below
  out = jax.lax.map(lambda xs: fn(*xs), blocks).swapaxes(0, 1)  # [B, n, chunk, ...]
  return out.reshape((out.shape[0], n * chunk) + out.shape[3:])[:, :i]
