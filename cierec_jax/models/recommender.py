"""The one top-level model: CIERec and the baselines, assembled from a ModelSpec.

Training (`__call__`) scores (user, positive, negative) triples with the
direct formulas. Evaluation precomputes per-item and per-user tables once and
scores [B, C] candidates from them (`item_table`, `user_table`,
`score_candidates`); a test checks both give the same scores.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cierec_jax.models import embed
from cierec_jax.models import attention
from cierec_jax.models import gates
from cierec_jax.models import gradient_gates
from cierec_jax.models import heads
from cierec_jax.models import resnet
from cierec_jax.models import semantic
from cierec_jax.models.spec import ModelSpec

EMBED_INIT = nn.initializers.normal(0.01)
POLICY = 'policy'  # the params subtree the optimiser routes to Adam


def user_vectors_and_biases(s: ModelSpec):
  """p_u [U, d], b_u [U, 1] and b_i [I, 1]: the MF part every scorer shares
  (set as self.user_embed, self.user_bias, self.item_bias: the names are the
  parameter paths checkpoints and train.init_from match on)."""
  return (embed.Embed(s.num_users, s.embed_dim, embedding_init=EMBED_INIT),
          embed.Embed(s.num_users, 1, embedding_init=nn.initializers.zeros),
          embed.Embed(s.num_items, 1, embedding_init=nn.initializers.zeros))


class Recommender(nn.Module):
  spec: ModelSpec
  axis_name: str | None = None  # BatchNorm's cross-device axis under pmap

  def setup(self):
    s, d, D = self.spec, self.spec.embed_dim, self.spec.feature_dim
    self.alpha = self.param('alpha', nn.initializers.zeros, ())
    self.user_embed, self.user_bias, self.item_bias = user_vectors_and_biases(s)
    if s.uses_q:
      self.item_embed = embed.Embed(s.num_items, d, embedding_init=EMBED_INIT)
    if s.encoder is not None:
      self.encoder = resnet.create(s, self.axis_name)
    if s.uses_v:
      self.visual = (gates.VisualAwareGate(d, D, s.gate_activation) if s.visual_gate
                     else gates.PlainVisual(d))
    if s.semantic_from_c:
      self.inference = (gates.InferenceGate(d, D, s.gate_activation) if s.inference_gate
                        else nn.Dense(D))
    if s.uses_s:
      self.semantic = semantic.SemanticFusion(d, s.num_elements, use_tokens=s.pi)
    self.fusion = heads.Fusion(d, s.num_parts)
    if s.vbpr:
      content_dim = D if s.ci else d
      if not s.ci:
        self.vbpr_projection = nn.Dense(d)
      self.user_content = embed.Embed(s.num_users, content_dim, embedding_init=EMBED_INIT)
      self.content_bias = self.param('content_bias', nn.initializers.zeros, (content_dim,))
    if s.gr:
      self.policy = gradient_gates.GatePolicies(len(s.gr_actions))

  # -- pieces shared by training and scoring ---------------------------------
  def encode(self, content, train: bool):
    """content: [N, H, W, 3] or [N, F] float32 -> e: [N, D] float32 (None without encoder)."""
    if self.spec.encoder is None:
      return None
    if 'encoder' in self.spec.frozen:
      # model.freeze_encoder: fixed weights and BatchNorm statistics (inference mode), so
      # e_i is exactly what cierec_jax.features extracts; no backward through the ResNet.
      return jax.lax.stop_gradient(self.encoder(content, False))
    return self.encoder(content, train)

  def users(self, users):
    """users: [B] int -> dict of [B, ...] per-user parts."""
    out = {'p': self.user_embed(users), 'b': self.user_bias(users)[..., 0]}
    if self.spec.vbpr:
      out['a'] = self.user_content(users)
    return out

  def items(self, items, e, elements, lengths, scales=None):
    """Per-item parts that do not depend on the user.

    items: [N] int; e: [N, D] or None; elements: [N, L] int32; lengths: [N]
    int32; scales: [2] float32 (lambda_v, lambda_s) for the gradient gates.
    """
    s = self.spec
    out = {'b': self.item_bias(items)[..., 0]}
    if s.uses_q:
      out['q'] = self.item_embed(items)
    e_v = e_s = e
    if s.gr and scales is not None:
      e_v = gradient_gates.scale_gradient(e, scales[0])
      e_s = gradient_gates.scale_gradient(e, scales[1])
    if s.uses_v:
      out['e_v'] = e_v
      if not s.visual_gate:
        out['v'] = self.visual(e_v)
    c = self.inference(e_s) if s.semantic_from_c else None
    if s.uses_s:
      out['s'] = self.semantic(c, elements, lengths)
    if s.vbpr:
      out['c'] = c if s.ci else self.vbpr_projection(e)
    return out

  def _combine(self, user, item, v):
    """Final score from parts that broadcast against each other -> [...]."""
    s = self.spec
    parts = ([item['q']] if s.uses_q else []) + ([v] if s.uses_v else []) + (
        [item['s']] if s.uses_s else [])
    f = self.fusion(parts)
    y = heads.mf_score(self.alpha, user['b'], item['b'], user['p'], f)
    if self.spec.vbpr:
      y = y + heads.vbpr_content(self.content_bias, user['a'], item['c'])
    return y, f

  def _visual(self, user, item):
    if not self.spec.uses_v:
      return None
    return self.visual(user['p'], item['e_v']) if self.spec.visual_gate else item['v']

  # -- training ------------------------------------------------------------
  def __call__(self, batch, scales=None, train: bool = True):
    """Scores a batch of BPR triples.

    batch: user/pos/neg [B] int32; pos_content/neg_content [B, ...] float32;
    pos_elements/neg_elements [B, L] int32; pos_lengths/neg_lengths [B] int32.
    Returns pos, neg: [B] scores; v_pos, v_neg, s_pos, s_neg: [B, d] branch
    features (when present); reg: [B] the squared norms L2 acts on; p: [B, d].
    """
    e_pos = e_neg = None
    if self.spec.encoder is not None:
      # Positives and negatives go through the encoder (and BatchNorm) together.
      e = self.encode(jnp.concatenate([batch['pos_content'], batch['neg_content']]), train)
      e_pos, e_neg = jnp.split(e, 2)
    user = self.users(batch['user'])
    out = {}
    reg = jnp.sum(user['p'] ** 2, -1) + user['b'] ** 2
    if self.spec.vbpr:
      reg = reg + jnp.sum(user['a'] ** 2, -1)
    for side, e in (('pos', e_pos), ('neg', e_neg)):
      lengths = batch[f'{side}_lengths']
      if train and self.spec.annotation_dropout > 0:
        # Withheld annotations at evaluation give the LSTM [x_0] alone; dropping
        # them in training shows it such sequences too.
        drop = jax.random.bernoulli(self.make_rng('dropout'), self.spec.annotation_dropout,
                                    lengths.shape)
        lengths = jnp.where(drop, 0, lengths)
      item = self.items(batch[side], e, batch[f'{side}_elements'], lengths, scales)
      v = self._visual(user, item)
      out[side], _ = self._combine(user, item, v)
      if v is not None:
        out[f'v_{side}'] = v
      if 's' in item:
        out[f's_{side}'] = item['s']
      reg = reg + item['b'] ** 2 + (jnp.sum(item['q'] ** 2, -1) if 'q' in item else 0.0)
    out['reg'] = reg
    out['p'] = user['p']
    if self.spec.gr and self.is_initializing():
      self.policy_probs(self.initial_policy_state())  # create the policy params too
    return out

  def initial_policy_state(self):
    """[2, A] the uniform distribution each policy starts from."""
    a = len(self.spec.gr_actions)
    return jnp.full((2, a), 1.0 / a, jnp.float32)

  def policy_probs(self, states):
    """states: [2, A] -> [2, A] action probabilities of the (R_v, R_s) policies."""
    return self.policy(states)

  # -- evaluation ----------------------------------------------------------
  def item_table(self, e, elements, lengths):
    """Every item's user-independent parts, computed once per evaluation.

    e: [I, D] encoder outputs (inference mode) or None; elements: [I, L];
    lengths: [I] (zeros to withhold annotations) -> dict of [I, ...] arrays.
    """
    items = jnp.arange(self.spec.num_items)
    table = self.items(items, e, elements, lengths)
    if self.spec.visual_gate:
      table['gate'] = self.visual.item_part(e)  # the per-item block of delta's layer
    return table

  def user_table(self, users):
    """users: [B] -> per-user parts, with the per-user block of delta's layer."""
    table = self.users(users)
    if self.spec.visual_gate:
      table['gate'] = self.visual.user_part(table['p']) + self.visual.const_part()
    return table

  def _candidates(self, users, candidates, item_table):
    """(score [B, C], fused item representation f [B, C, d]) from the tables;
    candidates=None: every item, C = I, the table broadcast rather than gathered."""
    user = {k: v[:, None] for k, v in self.user_table(users).items()}
    item = {k: v[None] if candidates is None else v[candidates] for k, v in item_table.items()}
    v = None
    if self.spec.uses_v:
      if self.spec.visual_gate and candidates is None:
        # The [B, I, D] gate in item chunks of about 4 MB that stay in cache:
        # the gate alone 2x faster on CPU than one pass over the whole
        # [B, I, D] (MovieLens shapes), the evaluation 1.5x (README, Speed).
        gate = self.visual.from_parts_fn()
        v = attention.over_item_chunks(lambda e, g: gate(e[None], user['gate'] + g[None]),
                                       (item_table['e_v'], item_table['gate']),
                                       16 * users.shape[0] * item_table['e_v'].shape[-1])
      elif self.spec.visual_gate:
        v = self.visual.from_parts(item['e_v'], user['gate'] + item['gate'])
      else:
        v = item['v']
    return self._combine(user, item, v)

  def score_candidates(self, users, candidates, item_table):
    """users: [B] int; candidates: [B, C] int; item_table from `item_table`
    -> [B, C] float32 scores, equal to training-mode scores with BatchNorm in
    inference mode and the gradient gates' identity forward."""
    return self._candidates(users, candidates, item_table)[0]

  def score_all_items(self, users, item_table):
    """users: [B] -> [B, I] scores of every item: score_candidates without a
    [B, I, ...] copy of each item table entry (CIERec's e_i and gate part are
    [I, D] each)."""
    return self._candidates(users, None, item_table)[0]

  def fused_candidates(self, users, candidates, item_table):
    """[B, C, d] f_i as user users[b] sees candidates[b, c] (v_i depends on the user)."""
    return self._candidates(users, candidates, item_table)[1]
