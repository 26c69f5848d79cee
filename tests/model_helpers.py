"""Tiny model specs and batches for model tests."""

import jax
import jax.numpy as jnp
import numpy as np

from cierec_jax import train_step
from cierec_jax.models import registry
from configs import default

U, I, E, L = 7, 11, 6, 4


def model_config(**overrides):
  c = default.get_config().model
  c.embed_dim, c.feature_dim, c.encoder_width = 8, 16, 4
  c.encoder_init = ''  # every image model reads pixels, whatever the default weights
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def make(modality='image', has_annotations=True, **overrides):
  return registry.create(model_config(**overrides), num_users=U, num_items=I, num_elements=E,
                         modality=modality, has_annotations=has_annotations)


def batch(b=4, modality='image', seed=0, size=16, features=10):
  rng = np.random.default_rng(seed)
  shape = (b, size, size, 3) if modality == 'image' else (b, features)
  lengths = rng.integers(0, L + 1, (2, b)).astype(np.int32)
  elements = rng.integers(1, E, (2, b, L)).astype(np.int32)
  elements = np.where(np.arange(L)[None, None] < lengths[..., None], elements, 0)
  return {'user': jnp.asarray(rng.integers(0, U, b), jnp.int32),
          'pos': jnp.asarray(rng.integers(0, I, b), jnp.int32),
          'neg': jnp.asarray(rng.integers(0, I, b), jnp.int32),
          'pos_content': jnp.asarray(rng.normal(size=shape), jnp.float32),
          'neg_content': jnp.asarray(rng.normal(size=shape), jnp.float32),
          'pos_elements': jnp.asarray(elements[0]), 'neg_elements': jnp.asarray(elements[1]),
          'pos_lengths': jnp.asarray(lengths[0]), 'neg_lengths': jnp.asarray(lengths[1]),
          'weight': jnp.ones(b, jnp.float32)}


def shapes(model, b):
  """The variables' shapes without compiling or running anything."""
  return jax.eval_shape(lambda r: model.init(r, b, jnp.ones(2), train=True), rngs())


def rngs(seed=0):
  """The rng streams a model may draw from in training: params and dropout."""
  key = jax.random.key(seed)
  return {'params': key, 'dropout': jax.random.fold_in(key, 1)}


def init(model, b, seed=0):
  # one program at optimisation level 0: far faster to compile than op by op or optimised
  return train_step.init_variables(model, rngs(seed), b, jnp.ones(2), train=True)


def scoring_inputs(modality='image', seed=5, features=10):
  """Every item's content, elements and lengths, 4 users with 6 candidates
  each, and the training batch of their first two candidates, for checking
  score_candidates against the training forward.

  Returns (contents [I, ...], elements [I, L], lengths [I], users [4],
  candidates [4, 6], batch).
  """
  rng = np.random.default_rng(seed)
  if modality == 'image':
    contents = jnp.asarray(rng.normal(size=(I, 16, 16, 3)), jnp.float32)
  else:  # sparse, like multi-hot features: some entries zero (VECF's regions skip them)
    contents = jnp.asarray(rng.normal(size=(I, features)) * (rng.random((I, features)) < 0.5), jnp.float32)
  lengths = jnp.asarray(rng.integers(0, L + 1, I), jnp.int32)
  elements = jnp.where(jnp.arange(L)[None] < lengths[:, None],
                       jnp.asarray(rng.integers(1, E, (I, L)), jnp.int32), 0)
  users = jnp.array([0, 3, 6, 2], jnp.int32)
  cands = jnp.asarray(rng.integers(0, I, (4, 6)), jnp.int32)
  pos, neg = cands[:, 0], cands[:, 1]
  batch = {'user': users, 'pos': pos, 'neg': neg, 'pos_content': contents[pos],
           'neg_content': contents[neg], 'pos_elements': elements[pos], 'neg_elements': elements[neg],
           'pos_lengths': lengths[pos], 'neg_lengths': lengths[neg], 'weight': jnp.ones(4)}
  return contents, elements, lengths, users, cands, batch
