"""PiNet (Meng et al., ACM MM 2020): one encoder, dual gates, two tasks.

The shared encoder's e_i is routed by two gates into a collaborative and a
semantic representation, x_c = e_i * delta_c(e_i) and x_s = e_i * delta_s(e_i)
(delta = gates.activation(Dense_D)). The collaborative one scores:
v_i = leaky_relu(Dense_d(x_c)), y = alpha + b_u + b_i + p_u . v_i (BPR). The
semantic one predicts the item's annotation elements (multi-label, sigmoid
cross-entropy), trained jointly through the `semantic` extra loss weighted by
`model.semantic_loss_weight`. Annotations are training targets only: scoring
reads the image alone (`reads_annotations=False`). CIERec's eq. 3 and 4 grow
from these gates (README, "Choices the paper leaves open").
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cierec_jax.models import gates
from cierec_jax.models import heads
from cierec_jax.models import resnet
from cierec_jax.models import spec as spec_lib
from cierec_jax.models.recommender import user_vectors_and_biases
from cierec_jax.models.spec import ModelSpec


class DualGate(nn.Module):
  """(x_c, x_s) = (e * delta_c(e), e * delta_s(e)), delta_k = act(Dense_D)."""
  feature_dim: int
  gate_activation: str = 'sigmoid'

  @nn.compact
  def __call__(self, e):
    """e: [..., D] -> x_c, x_s: [..., D]."""
    act = gates.activation(self.gate_activation)
    return (e * act(nn.Dense(self.feature_dim, name='collaborative')(e)),
            e * act(nn.Dense(self.feature_dim, name='semantic')(e)))


def semantic_loss(logits, elements, lengths):
  """Multi-label loss of predicting an item's annotation elements.

  logits: [N, E - 1] float32 for element ids 1..E-1; elements: [N, L] int32
  (0-padded); lengths: [N] int32 -> [N] float32, the sigmoid cross-entropy
  averaged over the E - 1 elements; 0 for an item with an empty annotation,
  which says nothing about which elements are absent.
  """
  valid = jnp.arange(elements.shape[1]) < lengths[:, None]
  targets = jnp.max(jax.nn.one_hot(elements - 1, logits.shape[-1]) * valid[..., None], axis=1)
  loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
  return loss * (lengths > 0)


class PiNet(nn.Module):
  spec: ModelSpec
  semantic_loss_weight: float
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap

  def setup(self):
    s, d, D = self.spec, self.spec.embed_dim, self.spec.feature_dim
    self.alpha = self.param('alpha', nn.initializers.zeros, ())
    self.user_embed, self.user_bias, self.item_bias = user_vectors_and_biases(s)
    self.encoder = resnet.create(s, self.axis_name)
    self.gates = DualGate(D, s.gate_activation)
    self.collaborative = gates.PlainVisual(d)
    self.semantic = nn.Dense(s.num_elements - 1)

  def encode(self, content, train: bool):
    """content: [N, H, W, 3] or [N, F] float32 -> e: [N, D] float32."""
    return self.encoder(content, train)

  def items(self, items, e):
    """items: [N]; e: [N, D] -> b: [N]; v: [N, d]; x_s: [N, D]."""
    x_c, x_s = self.gates(e)
    return {'b': self.item_bias(items)[..., 0], 'v': self.collaborative(x_c), 'x_s': x_s}

  def users(self, users):
    return {'p': self.user_embed(users), 'b': self.user_bias(users)[..., 0]}

  def __call__(self, batch, scales=None, train: bool = True):
    """Scores BPR triples (registry contract): pos, neg, reg: [B]; losses:
    {'semantic': [B]} the weighted mean of the positive's and negative's
    semantic loss."""
    del scales  # no gradient gates
    e_pos, e_neg = resnet.encode_pair(self.encode, batch, train)
    user = self.users(batch['user'])
    out, semantic = {}, 0.0
    reg = jnp.sum(user['p'] ** 2, -1) + user['b'] ** 2
    for side, e_side in (('pos', e_pos), ('neg', e_neg)):
      item = self.items(batch[side], e_side)
      out[side] = heads.mf_score(self.alpha, user['b'], item['b'], user['p'], item['v'])
      semantic = semantic + 0.5 * semantic_loss(self.semantic(item['x_s']), batch[f'{side}_elements'],
                                                batch[f'{side}_lengths'])
      reg = reg + item['b'] ** 2
    out['reg'] = reg
    out['losses'] = {'semantic': self.semantic_loss_weight * semantic}
    return out

  def item_table(self, e, elements, lengths):
    """e: [I, D] -> b: [I]; v: [I, d]. Scoring reads no annotation."""
    del elements, lengths
    item = self.items(jnp.arange(self.spec.num_items), e)
    return {'b': item['b'], 'v': item['v']}

  def score_candidates(self, users, candidates, item_table):
    """users: [B]; candidates: [B, C] -> [B, C] float32."""
    user = {k: x[:, None] for k, x in self.users(users).items()}
    return heads.mf_score(self.alpha, user['b'], item_table['b'][candidates], user['p'],
                          item_table['v'][candidates])


def build(model, *, axis_name=None, num_users, num_items, num_elements, modality, has_annotations):
  """registry.EXTRA's builder for model.name='pinet'."""
  if not has_annotations or num_elements < 2:
    raise ValueError('model.name=pinet needs annotations (the targets of its semantic task), '
                     'and this dataset has none')
  if float(model.semantic_loss_weight) < 0:
    raise ValueError(f'model.semantic_loss_weight={model.semantic_loss_weight}: expected >= 0')
  s = spec_lib.plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
                     modality=modality, uses_v=True)
  return PiNet(s, float(model.semantic_loss_weight), axis_name=axis_name)
