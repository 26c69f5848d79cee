"""Eq. 3-4 gates, the safe normalisation and the gradient gates against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cierec_jax.models import gates
from cierec_jax.models import gradient_gates

d, D = 5, 7


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _leaky(x):
  return np.where(x > 0, x, 0.01 * x)


def _norm(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def test_safe_normalize_zero_vector_and_gradient():
  x = jnp.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
  y = gates.safe_normalize(x)
  np.testing.assert_allclose(y, [[0, 0, 0], [0.6, 0.8, 0]], atol=1e-7)
  g = jax.grad(lambda x: jnp.sum(gates.safe_normalize(x)))(x)
  assert np.isfinite(np.asarray(g)).all()
  tiny = jnp.full((1, 3), 1e-14)
  np.testing.assert_allclose(gates.safe_normalize(tiny), tiny / 1e-12, rtol=1e-5)


@pytest.mark.parametrize('act', ['sigmoid', 'identity'])
def test_visual_aware_gate_matches_numpy(act):
  m = gates.VisualAwareGate(d, D, act)
  rng = np.random.default_rng(0)
  p, e = rng.normal(size=(3, d)).astype(np.float32), rng.normal(size=(3, D)).astype(np.float32)
  v = m.init(jax.random.key(1), p, e)['params']
  kernel = np.concatenate([v['kernel_user'], v['kernel_item'], v['kernel_gate']])
  x = np.concatenate([p, e, np.broadcast_to(v['g_v'], (3, d))], axis=1)
  pre = x @ kernel + v['bias']
  gate = _sigmoid(pre) if act == 'sigmoid' else pre
  want = _leaky(_norm(e * gate) @ v['mlp_v']['kernel'] + v['mlp_v']['bias'])
  got = m.apply({'params': v}, p, e)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_visual_aware_gate_split_equals_direct():
  """Scoring's per-user + per-item + constant parts give the direct formula."""
  m = gates.VisualAwareGate(d, D)
  rng = np.random.default_rng(2)
  p = jnp.asarray(rng.normal(size=(4, d)), jnp.float32)  # B users
  e = jnp.asarray(rng.normal(size=(9, D)), jnp.float32)  # I items
  params = m.init(jax.random.key(0), p, e[:4])
  def split(mod):
    pre = (mod.user_part(p)[:, None] + mod.item_part(e)[None] + mod.const_part())
    return mod.from_parts(jnp.broadcast_to(e, (4, 9, D)), pre)
  got = m.apply(params, method=split)
  direct = m.apply(params, jnp.broadcast_to(p[:, None], (4, 9, d)), jnp.broadcast_to(e, (4, 9, D)))
  np.testing.assert_allclose(got, direct, atol=1e-5)


def test_inference_gate_matches_numpy():
  m = gates.InferenceGate(d, D)
  e = np.random.default_rng(3).normal(size=(3, D)).astype(np.float32)
  v = m.init(jax.random.key(0), e)['params']
  x = np.concatenate([e, np.broadcast_to(v['g_s'], (3, d))], axis=1)
  want = _norm(e * _sigmoid(x @ v['delta_s']['kernel'] + v['delta_s']['bias']))
  np.testing.assert_allclose(m.apply({'params': v}, e), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m.apply({'params': v}, np.zeros((1, D), np.float32)), 0.0)


def test_plain_visual_matches_numpy():
  m = gates.PlainVisual(d)
  e = np.random.default_rng(4).normal(size=(3, D)).astype(np.float32)
  v = m.init(jax.random.key(0), e)['params']
  want = _leaky(e @ v['mlp_v']['kernel'] + v['mlp_v']['bias'])
  np.testing.assert_allclose(m.apply({'params': v}, e), want, rtol=1e-5, atol=1e-6)


def test_bad_gate_activation():
  with pytest.raises(ValueError, match='model.gate_activation'):
    gates.activation('relu')


@pytest.mark.parametrize('lam', [0.2, 0.6, 1.0])
def test_gradient_gate_scales_exactly(lam):
  x = jnp.array([0.3, -1.2, 2.0])
  f = lambda x: jnp.sum(jnp.sin(x) * x)
  gated = lambda x, lam: f(gradient_gates.scale_gradient(x, lam))
  assert jnp.array_equal(gradient_gates.scale_gradient(x, jnp.float32(lam)), x)
  g = jax.grad(gated)(x, jnp.float32(lam))
  np.testing.assert_array_equal(g, jnp.float32(lam) * jax.grad(f)(x))
  assert jax.grad(gated, argnums=1)(x, jnp.float32(lam)) == 0.0


def test_gradient_gate_only_scales_its_path():
  x = jnp.array([0.5, -0.7])
  lam = jnp.float32(0.4)
  # f = gated path + ungated path: only the first term's gradient is scaled.
  f = lambda x: jnp.sum(gradient_gates.scale_gradient(x, lam) ** 2) + jnp.sum(3.0 * x)
  np.testing.assert_allclose(jax.grad(f)(x), 0.4 * 2 * x + 3.0, rtol=1e-6)


def test_policy_is_a_distribution():
  m = gradient_gates.GatePolicies(5)
  s = jnp.full((2, 5), 0.2)
  v = m.init(jax.random.key(0), s)
  probs = m.apply(v, s)
  assert probs.shape == (2, 5)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  w = v['params']['visual']['mlp_dqn']
  want = np.exp(s[0] @ w['kernel'] + w['bias'])
  np.testing.assert_allclose(probs[0], want / want.sum(), rtol=1e-5)
