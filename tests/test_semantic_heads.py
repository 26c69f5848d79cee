"""Eq. 5 (semantic LSTM), eq. 7 (fusion) and eq. 8 (heads) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from cierec_jax.models import heads
from cierec_jax.models import semantic

d, Dc, E, L = 4, 6, 9, 5


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_lstm(params, seq):
  """Flax LSTMCell's equations, last hidden state. seq: [T, d]."""
  h = c = np.zeros(d)
  dense = lambda n, x: x @ params[n]['kernel'] + params[n].get('bias', 0)
  for x in seq:
    i = _sigmoid(dense('ii', x) + dense('hi', h))
    f = _sigmoid(dense('if', x) + dense('hf', h))
    g = np.tanh(dense('ig', x) + dense('hg', h))
    o = _sigmoid(dense('io', x) + dense('ho', h))
    c = f * c + i * g
    h = o * np.tanh(c)
  return h


def _setup():
  rng = np.random.default_rng(0)
  c = rng.normal(size=(3, Dc)).astype(np.float32)
  lengths = np.array([0, 2, 5], np.int32)
  elements = rng.integers(1, E, (3, L)).astype(np.int32)
  elements[np.arange(L)[None] >= lengths[:, None]] = 0
  m = semantic.SemanticFusion(d, E)
  return m, m.init(jax.random.key(0), c, elements, lengths)['params'], c, elements, lengths


def test_semantic_fusion_matches_numpy_lstm():
  m, p, c, elements, lengths = _setup()
  got = np.asarray(m.apply({'params': p}, c, elements, lengths))
  for n in range(3):
    x0 = c[n] @ p['x0']['kernel'] + p['x0']['bias']
    seq = np.concatenate([x0[None], np.asarray(p['elements']['embedding'])[elements[n, :lengths[n]]]])
    np.testing.assert_allclose(got[n], numpy_lstm(p['lstm'], seq), rtol=1e-4, atol=1e-6)


def test_padding_does_not_change_s():
  m, p, c, elements, lengths = _setup()
  s = m.apply({'params': p}, c, elements, lengths)
  junk = np.where(elements == 0, 7, elements)  # other ids in the padded slots
  wider = np.concatenate([junk, np.full((3, 4), 3, np.int32)], axis=1)  # and more padding
  np.testing.assert_allclose(m.apply({'params': p}, c, junk, lengths), s, atol=1e-6)
  np.testing.assert_allclose(m.apply({'params': p}, c, wider, lengths), s, atol=1e-6)
  # lengths of 0: the sequence is [x_0] alone, whatever the elements
  zero = m.apply({'params': p}, c, elements, np.zeros(3, np.int32))
  np.testing.assert_allclose(zero[0], s[0], atol=1e-6)
  assert not np.allclose(zero[2], s[2])


def test_semantic_without_c_uses_start_token():
  m = semantic.SemanticFusion(d, E)
  elements, lengths = np.array([[1, 2, 0]], np.int32), np.array([2], np.int32)
  p = m.init(jax.random.key(0), None, elements, lengths)['params']
  assert 'start' in p and 'x0' not in p
  seq = np.concatenate([np.asarray(p['start'])[None], np.asarray(p['elements']['embedding'])[[1, 2]]])
  np.testing.assert_allclose(m.apply({'params': p}, None, elements, lengths)[0],
                             numpy_lstm(p['lstm'], seq), rtol=1e-4, atol=1e-6)


def test_fusion_matches_numpy():
  rng = np.random.default_rng(1)
  parts = [rng.normal(size=(2, d)).astype(np.float32) for _ in range(3)]
  m = heads.Fusion(d, 3)
  p = m.init(jax.random.key(0), parts)['params']
  x = np.concatenate(parts, axis=1) @ p['mlp_f']['kernel'] + p['mlp_f']['bias']
  np.testing.assert_allclose(m.apply({'params': p}, parts), np.where(x > 0, x, 0.01 * x), rtol=1e-5, atol=1e-6)
  one = heads.Fusion(d, 1)
  assert one.init(jax.random.key(0), parts[:1]) == {}
  np.testing.assert_array_equal(one.apply({}, parts[:1]), parts[0])


def test_heads_match_numpy():
  rng = np.random.default_rng(2)
  p, f = rng.normal(size=(3, d)), rng.normal(size=(3, d))
  b_u, b_i = rng.normal(size=3), rng.normal(size=3)
  a, c, w = rng.normal(size=(3, Dc)), rng.normal(size=(3, Dc)), rng.normal(size=Dc)
  np.testing.assert_allclose(heads.mf_score(0.5, b_u, b_i, p, f), 0.5 + b_u + b_i + (p * f).sum(1), rtol=1e-6)
  np.testing.assert_allclose(heads.vbpr_content(w, a, c), c @ w + (a * c).sum(1), rtol=1e-6)
