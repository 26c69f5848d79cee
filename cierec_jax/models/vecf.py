"""VECF (Chen et al., SIGIR 2019): user-conditioned attention over an item's regions.

a_l = w . relu(W_u p_u + W_r r_l + b) over the item's regions r_l, alpha =
softmax(a), v_ui = Dense_d(sum_l alpha_l r_l), and the BPR score
y = alpha + b_u + b_i + p_u . (q_i + v_ui). Regions: the cells of the
ResNet18's last feature map for images, pre-extracted by the pretrained
encoder as in the paper (VGG-19 regions there) when model.encoder_init is set,
else trained end to end; for feature datasets' vectors, the
`model.vecf_max_regions` largest non-zero entries, each encoded alone
(resnet.FeatureEncoder). The review-generation branch is left out: no
dataset here has review text (README, "Choices the paper leaves open").
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from cierec_jax.models import embed
from cierec_jax.models import attention
from cierec_jax.models import heads
from cierec_jax.models import resnet
from cierec_jax.models import spec as spec_lib
from cierec_jax.models.recommender import EMBED_INIT
from cierec_jax.models.recommender import user_vectors_and_biases
from cierec_jax.models.spec import ModelSpec

ACTIVATION = 'relu'


class VECF(nn.Module):
  spec: ModelSpec
  max_regions: int  # feature datasets: regions per item
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap

  def setup(self):
    s, d = self.spec, self.spec.embed_dim
    self.alpha = self.param('alpha', nn.initializers.zeros, ())
    self.user_embed, self.user_bias, self.item_bias = user_vectors_and_biases(s)
    self.item_embed = embed.Embed(s.num_items, d, embedding_init=EMBED_INIT)
    self.encoder = resnet.create(s, self.axis_name, regions=self.max_regions)
    self.attention = attention.AdditiveAttention(d, ACTIVATION)
    self.project = nn.Dense(d)

  def encode(self, content, train: bool):
    """content: [N, H, W, 3] or [N, F] -> [N, M, 2d + 1] float32 per region:
    its attention key part W_r r_l + b, its projection Dense_d(r_l), and 1.0
    for a region (0.0 for an empty slot: a feature vector with fewer than M
    non-zero entries). Since sum_l alpha_l = 1, pooling the projections is
    projecting the pooled region."""
    if self.spec.encoder == 'resnet18' or self.spec.region_features:
      regions = self.encoder(content, train)  # [N, h * w, D]
      keys, values = self.attention.key_part(regions), self.project(regions)
      mask = jnp.ones(regions.shape[:2], jnp.float32)
    else:
      entries, index, mask = self.encoder(content, train)  # [F, D], [N, M], [N, M]
      keys, values = self.attention.key_part(entries)[index], self.project(entries)[index]
    return jnp.concatenate([keys, values, mask[..., None].astype(jnp.float32)], axis=-1)

  def users(self, users):
    """users: [B] -> p, b, and the attention's user part W_u p_u: [B, ...]."""
    p = self.user_embed(users)
    return {'p': p, 'b': self.user_bias(users)[..., 0], 'query': self.attention.query_part(p)}

  def items(self, items, e):
    """items: [N]; e: [N, M, 2d + 1] from `encode` -> dict of [N, ...] parts."""
    d = self.spec.embed_dim
    return {'b': self.item_bias(items)[..., 0], 'q': self.item_embed(items), 'keys': e[..., :d],
            'values': e[..., d:2 * d], 'mask': e[..., 2 * d] > 0}

  def _score(self, user, item, v):
    return heads.mf_score(self.alpha, user['b'], item['b'], user['p'], item['q'] + v)

  def __call__(self, batch, scales=None, train: bool = True):
    """Scores BPR triples (registry contract); pos, neg, reg: [B] float32."""
    del scales  # no gradient gates
    e_pos, e_neg = resnet.encode_pair(self.encode, batch, train)
    user = self.users(batch['user'])
    w = self.attention.score_vector()
    out = {}
    reg = jnp.sum(user['p'] ** 2, -1) + user['b'] ** 2
    for side, e_side in (('pos', e_pos), ('neg', e_neg)):
      item = self.items(batch[side], e_side)
      v = attend_regions(user['query'], item['keys'], item['values'], item['mask'], w)
      out[side] = self._score(user, item, v)
      reg = reg + item['b'] ** 2 + jnp.sum(item['q'] ** 2, -1)
    out['reg'] = reg
    return out

  def item_table(self, e, elements, lengths):
    """e: [I, M, 2d + 1] -> every item's parts; VECF reads no annotation."""
    del elements, lengths
    return self.items(jnp.arange(self.spec.num_items), e)

  def score_candidates(self, users, candidates, item_table):
    """users: [B]; candidates: [B, C] -> [B, C] float32, in column chunks
    (the attention is [B, C, M, d] per call)."""
    user = self.users(users)
    w = self.attention.score_vector()
    t = item_table

    def pooled(c):
      return attend_regions(user['query'][:, None], t['keys'][c], t['values'][c], t['mask'][c], w)

    m, d = t['keys'].shape[1], self.spec.embed_dim
    v = attention.over_candidate_chunks(pooled, candidates, 4 * m * d)
    item = {'b': t['b'][candidates], 'q': t['q'][candidates]}
    return self._score({k: x[:, None] for k, x in user.items()}, item, v)

  def score_all_items(self, users, item_table):
    """users: [B] -> [B, I]: score_candidates of every item, each chunk of the
    item table broadcast against the users instead of gathered per user
    ([B, I, M, d] keys and values): MovieLens evaluation (M = 100) about 2x
    faster (README, Speed)."""
    user = self.users(users)
    w = self.attention.score_vector()
    t = item_table

    def pooled(keys, values, mask):  # [c, M, d], [c, M, d], [c, M] -> [B, c, d]
      return attend_regions(user['query'][:, None], keys[None], values[None], mask[None], w)

    m, d = t['keys'].shape[1], self.spec.embed_dim
    v = attention.over_item_chunks(pooled, (t['keys'], t['values'], t['mask']), users.shape[0] * 4 * m * d)
    return self._score({k: x[:, None] for k, x in user.items()}, {'b': t['b'][None], 'q': t['q'][None]}, v)


def attend_regions(query, keys, values, mask, w):
  """v_ui = sum_l alpha_l Dense_d(r_l), a pure function of arrays.

  query: [..., d] the user part; keys, values: [..., M, d]; mask: [..., M]
  bool; w: [d] -> [..., d] (zeros for an item without regions).
  """
  weights = attention.masked_softmax(
      attention.additive_logits(query[..., None, :], keys, w, ACTIVATION), mask)
  return jnp.sum(weights[..., None] * values, axis=-2)


def build(model, *, axis_name=None, num_users, num_items, num_elements, modality, has_annotations):
  """registry.EXTRA's builder for model.name='vecf'."""
  del has_annotations
  if int(model.vecf_max_regions) < 1:
    raise ValueError(f'model.vecf_max_regions={model.vecf_max_regions}: expected at least 1')
  s = spec_lib.plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
                     modality=modality, uses_q=True, uses_v=True,
                     feature_baseline=True)  # defined on pre-extracted CNN region features
  if s.encoder == 'features' and modality == 'image':
    s = dataclasses.replace(s, region_features=True)
  return VECF(s, int(model.vecf_max_regions), axis_name=axis_name)
