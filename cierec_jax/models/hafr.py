"""HAFR-non-i (Gao et al., TMM 2020): ingredient- and component-level attention.

As in the authors' released code (github.com/elisagao122/HAFR, HAFR.py):
- image feature x_v = Dense_d(e_i) (linear);
- ingredient level: a_l = w . tanh(W [c_l; p_u; x_v] + b) over the item's
  annotation elements c_l (masked softmax), x_t = sum_l a_l c_l (zeros when
  the item has none, or annotations are withheld);
- component level: b_k = w' . tanh(W' [p_u; x_k] + b') over x_k in
  (q_i, x_t, x_v), softmax, f = sum_k b_k x_k;
- prediction: y = h . relu(dropout(W_f [p_u; f; p_u * f] + b_f)).
The user is the ID embedding p_u alone: no user-level attention over the
user's history ("non-i"; README, "Choices the paper leaves open").
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cierec_jax.models import embed
from cierec_jax.models import attention
from cierec_jax.models import resnet
from cierec_jax.models import spec as spec_lib
from cierec_jax.models.recommender import EMBED_INIT
from cierec_jax.models.spec import ModelSpec

ACTIVATION = 'tanh'


class HAFR(nn.Module):
  spec: ModelSpec
  dropout: float  # the prediction layer's dropout rate
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap

  def setup(self):
    s, d = self.spec, self.spec.embed_dim
    self.user_embed = embed.Embed(s.num_users, d, embedding_init=EMBED_INIT)
    self.item_embed = embed.Embed(s.num_items, d, embedding_init=EMBED_INIT)
    self.element_embed = embed.Embed(s.num_elements, d, embedding_init=EMBED_INIT)
    self.encoder = resnet.create(s, self.axis_name)
    self.image = nn.Dense(d)
    self.ingredient_attention = attention.AdditiveAttention(d, ACTIVATION)
    self.component_attention = attention.AdditiveAttention(d, ACTIVATION)
    self.hidden = nn.Dense(d)
    self.out = nn.Dense(1, use_bias=False)
    self.drop = nn.Dropout(self.dropout)

  def encode(self, content, train: bool):
    """content: [N, H, W, 3] or [N, F] float32 -> e: [N, D] float32."""
    return self.encoder(content, train)

  def items(self, items, e, elements, lengths):
    """User-independent parts. items: [N]; e: [N, D]; elements: [N, L] int32;
    lengths: [N] int32 -> q, x_v: [N, d]; c: [N, L, d]; mask: [N, L] bool;
    keys: [N, L, d] the ingredient attention's item part W [c_l; x_v] + b."""
    x_v = self.image(e)
    c = self.element_embed(elements)
    mask = jnp.arange(elements.shape[1]) < lengths[:, None]
    x_v_per_element = jnp.broadcast_to(x_v[:, None], c.shape)
    keys = self.ingredient_attention.key_part(jnp.concatenate([c, x_v_per_element], axis=-1))
    return {'q': self.item_embed(items), 'x_v': x_v, 'c': c, 'mask': mask, 'keys': keys}

  def users(self, users):
    """users: [B] -> p: [B, d]; query: [B, d] the ingredient attention's user part."""
    p = self.user_embed(users)
    return {'p': p, 'query': self.ingredient_attention.query_part(p)}

  def predict(self, p, q, x_t, x_v, train: bool):
    """Component attention and prediction layer. All [..., d] -> y: [...]."""
    parts = jnp.stack([q, x_t, x_v], axis=-2)  # [..., 3, d]
    weights = jax.nn.softmax(self.component_attention.logits(
        self.component_attention.query_part(p)[..., None, :], self.component_attention.key_part(parts)))
    f = jnp.sum(weights[..., None] * parts, axis=-2)
    h = self.hidden(jnp.concatenate([p, f, p * f], axis=-1))
    return self.out(nn.relu(self.drop(h, deterministic=not train)))[..., 0]

  def __call__(self, batch, scales=None, train: bool = True):
    """Scores BPR triples (registry contract); pos, neg, reg: [B] float32."""
    del scales  # no gradient gates
    e_pos, e_neg = resnet.encode_pair(self.encode, batch, train)
    user = self.users(batch['user'])
    w = self.ingredient_attention.score_vector()
    out = {}
    reg = jnp.sum(user['p'] ** 2, -1)
    for side, e_side in (('pos', e_pos), ('neg', e_neg)):
      item = self.items(batch[side], e_side, batch[f'{side}_elements'], batch[f'{side}_lengths'])
      x_t = attend_elements(user['query'], item['keys'], item['c'], item['mask'], w)
      out[side] = self.predict(user['p'], item['q'], x_t, item['x_v'], train)
      reg = reg + jnp.sum(item['q'] ** 2, -1) + jnp.sum(item['mask'][..., None] * item['c'] ** 2, (-2, -1))
    out['reg'] = reg
    return out

  def item_table(self, e, elements, lengths):
    """e: [I, D]; elements: [I, L]; lengths: [I] (zeros to withhold annotations)."""
    return self.items(jnp.arange(self.spec.num_items), e, elements, lengths)

  def score_candidates(self, users, candidates, item_table):
    """users: [B]; candidates: [B, C] -> [B, C] float32 (inference mode); the
    [B, C, L, d] ingredient attention runs in column chunks."""
    user = self.users(users)
    w = self.ingredient_attention.score_vector()
    t = item_table

    def ingredients(c):
      return attend_elements(user['query'][:, None], t['keys'][c], t['c'][c], t['mask'][c], w)

    x_t = attention.over_candidate_chunks(ingredients, candidates, 4 * t['c'].shape[1] * self.spec.embed_dim)
    return self._predict_pairs(user['p'], t, candidates, x_t)

  def _predict_pairs(self, p, t, candidates, x_t):
    """predict(p, q, x_t, x_v, train=False) for every (user, candidate) pair,
    with each layer's per-user and per-item parts computed once instead of per
    pair: the component attention's keys of q and x_v, its query, and the
    hidden layer's p block. p: [B, d]; candidates: [B, C]; x_t: [B, C, d] -> [B, C]."""
    d, ca = self.spec.embed_dim, self.component_attention
    item_keys = ca.key_part(jnp.stack([t['q'], t['x_v']], axis=-2))[candidates]  # [B, C, 2, d]
    keys = jnp.concatenate([item_keys[..., :1, :], ca.key_part(x_t)[..., None, :], item_keys[..., 1:, :]], -2)
    weights = jax.nn.softmax(ca.logits(ca.query_part(p)[:, None, None, :], keys))  # [B, C, 3]
    parts = jnp.stack([t['q'][candidates], x_t, t['x_v'][candidates]], axis=-2)  # as predict's order
    f = jnp.sum(weights[..., None] * parts, axis=-2)
    # hidden([p; f; p * f]) = p W_p + f W_f + (p * f) W_pf + b, W_p p once per user
    kernel, bias = self.hidden.variables['params']['kernel'], self.hidden.variables['params']['bias']
    h = ((p @ kernel[:d] + bias)[:, None] + f @ kernel[d:2 * d] + (p[:, None] * f) @ kernel[2 * d:])
    return self.out(nn.relu(h))[..., 0]


def attend_elements(query, keys, c, mask, w):
  """x_t = sum_l a_l c_l, a pure function of arrays.

  query: [..., d]; keys, c: [..., L, d]; mask: [..., L] bool; w: [d] -> [..., d].
  """
  weights = attention.masked_softmax(
      attention.additive_logits(query[..., None, :], keys, w, ACTIVATION), mask)
  return jnp.sum(weights[..., None] * c, axis=-2)


def build(model, *, axis_name=None, num_users, num_items, num_elements, modality, has_annotations):
  """registry.EXTRA's builder for model.name='hafr' (HAFR-non-i)."""
  if not has_annotations:
    raise ValueError('model.name=hafr needs annotations (its ingredient-level attention), '
                     'and this dataset has none')
  if not 0.0 <= float(model.hafr_dropout) < 1.0:
    raise ValueError(f'model.hafr_dropout={model.hafr_dropout}: expected a rate in [0, 1)')
  s = spec_lib.plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
                     modality=modality, uses_q=True, uses_v=True, uses_s=True, reads_annotations=True,
                     feature_baseline=True)  # defined on pre-extracted CNN features
  return HAFR(s, float(model.hafr_dropout), axis_name=axis_name)
