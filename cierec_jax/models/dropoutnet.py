"""DropoutNet (Volkovs et al., NeurIPS 2017): user and item towers over
[preference vector, content], trained to reproduce a pretrained MF's scores
with the items' preference input dropped out.

- Preference vectors are the pretrained MF's, held frozen: user p_u and item
  [q_i; b_i], so that their product p_u . q_i + b_i is the MF score up to the
  per-user constants alpha + b_u (which do not change a user's ranking). The
  regression target is that product, from the raw vectors; the towers read
  them standardised per column over the table and clipped to +-5 (the
  authors' `prep_standardize`).
- In training each item's preference input is zeroed with probability
  `model.dropout_rate` (Bernoulli per item row, 'dropout' rng), so the item
  tower learns to score from content alone.
- A cold item (the dataset's cold flag, `data.cold`: at most
  `dataset.cold_max_train_interactions` training interactions) has its
  preference input zeroed always, in training and evaluation, as the paper does
  for items without preference data. The flags are a frozen param `cold` [I]
  written from the dataset after init (spec.dataset_arrays).
- Each tower is [Dense, BatchNorm, tanh] per `model.tower_dims`, then
  Dense_d; the score is the towers' dot product. Users have no content here,
  so the user tower reads the preference vector alone and is never dropped.
- The loss is the squared error to the target on the triples' positives and
  negatives (the sampler's pairs stand in for the paper's top-N and random
  items per user); there is no BPR term (spec.bpr=False) and no L2.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cierec_jax.models import embed
from cierec_jax.models import recommender
from cierec_jax.models import resnet
from cierec_jax.models import spec as spec_lib

CLIP = 5.0  # standardised preference inputs are clipped to +-CLIP (authors' code)
FROZEN = ('user_embed', 'item_embed', 'item_bias', 'cold')  # the pretrained MF + cold flags


def standardize(table, rows):
  """rows: [N, k] of table: [T, k] -> [N, k] standardised per column over the
  table and clipped to +-CLIP; a constant column gives 0. The preference
  vectors are frozen inputs: no gradient flows back into them."""
  table, rows = jax.lax.stop_gradient(table), jax.lax.stop_gradient(rows)
  mean, std = jnp.mean(table, 0), jnp.std(table, 0)
  return jnp.clip((rows - mean) / jnp.maximum(std, 1e-8), -CLIP, CLIP)


def preference_dropout(rng, prefs, rate: float):
  """prefs: [N, k] -> prefs with each row zeroed with probability rate."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, prefs.shape[:1])
  return prefs * keep[:, None].astype(prefs.dtype)


# The authors' initialisation of every tower layer (truncated normal, std 0.01,
# zero bias): the towers start near 0, the scale of MF scores (std 0.13 on
# synthetic). Flax's default lecun_normal starts the dot product at std ~8, and
# the regression never recovers (valid Recall@10 0.04 against MF's 0.12).
TOWER_INIT = nn.initializers.truncated_normal(stddev=0.01)


class Tower(nn.Module):
  """[Dense, BatchNorm, tanh] per hidden width, then Dense_out."""
  hidden: tuple
  out_dim: int
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    """x: [N, k] -> [N, out_dim]."""
    for width in self.hidden:
      x = nn.Dense(width, kernel_init=TOWER_INIT)(x)
      # The authors' torch BatchNorm1d(momentum=0.01, eps=1e-3).
      x = nn.tanh(nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                               axis_name=self.axis_name)(x))
    return nn.Dense(self.out_dim, kernel_init=TOWER_INIT)(x)


class DropoutNet(nn.Module):
  spec: spec_lib.ModelSpec
  tower_dims: tuple = (800, 400)
  dropout_rate: float = 0.5
  axis_name: str | None = None

  def setup(self):
    s, d = self.spec, self.spec.embed_dim
    table = functools.partial(embed.Embed, embedding_init=recommender.EMBED_INIT)
    # Named as MF's, so that train.init_from copies them from a trained MF.
    self.user_embed = table(s.num_users, d)
    self.item_embed = table(s.num_items, d)
    self.item_bias = embed.Embed(s.num_items, 1, embedding_init=nn.initializers.zeros)
    self.cold = self.param('cold', nn.initializers.zeros, (s.num_items,))
    if s.encoder == 'resnet18':
      self.encoder = resnet.ResNet18(s.encoder_width, s.feature_dim, axis_name=self.axis_name)
    else:
      self.encoder = resnet.FeatureEncoder(s.feature_dim)
    self.user_tower = Tower(tuple(self.tower_dims), d, self.axis_name)
    self.item_tower = Tower(tuple(self.tower_dims), d, self.axis_name)

  def encode(self, content, train: bool):
    """content: [N, ...] -> e: [N, D]."""
    return self.encoder(content, train)

  def _item_vectors(self, items):
    """[N] -> [N, d + 1] the raw item preference vectors [q_i; b_i]."""
    return jnp.concatenate([self.item_embed(items), self.item_bias(items)], -1)

  def mf_scores(self, users, items):
    """users, items: [N] -> [N] the regression target p_u . q_i + b_i (raw, no gradient)."""
    p, v = self.user_embed(users), self._item_vectors(items)
    return jax.lax.stop_gradient(jnp.sum(p * v[:, :-1], -1) + v[:, -1])

  def user_vectors(self, users, train: bool = False):
    """users: [B] -> [B, d] the user tower's output."""
    pref = standardize(self.user_embed.embedding, self.user_embed(users))
    return self.user_tower(pref, train)

  def item_vectors(self, items, e, train: bool = False):
    """items: [N]; e: [N, D] -> [N, d] the item tower's output, the preference
    input zeroed for cold items and, in training, dropped out."""
    table = jnp.concatenate([self.item_embed.embedding, self.item_bias.embedding], -1)
    pref = standardize(table, self._item_vectors(items))
    pref = pref * (1.0 - jax.lax.stop_gradient(self.cold[items]))[:, None]
    if train:
      pref = preference_dropout(self.make_rng('dropout'), pref, self.dropout_rate)
    return self.item_tower(jnp.concatenate([pref, e], -1), train)

  def __call__(self, batch, scales=None, train: bool = True):
    """Scores a batch of triples; `losses['regression']`: [B] the squared
    errors to the MF scores of (u, i) and (u, j), halved (a mean over both)."""
    del scales
    b = batch['user'].shape[0]
    items = jnp.concatenate([batch['pos'], batch['neg']])
    e = self.encode(jnp.concatenate([batch['pos_content'], batch['neg_content']]), train)
    u = self.user_vectors(batch['user'], train)
    v_pos, v_neg = jnp.split(self.item_vectors(items, e, train), 2)
    pos, neg = jnp.sum(u * v_pos, -1), jnp.sum(u * v_neg, -1)
    target = self.mf_scores(jnp.tile(batch['user'], 2), items)
    err = (jnp.concatenate([pos, neg]) - target) ** 2
    return {'pos': pos, 'neg': neg, 'reg': jnp.zeros((b,), jnp.float32),
            'losses': {'regression': 0.5 * (err[:b] + err[b:])}}

  def item_table(self, e, elements, lengths):
    """e: [I, D] -> {'v': [I, d]} every item's tower output (inference mode)."""
    del elements, lengths
    return {'v': self.item_vectors(jnp.arange(self.spec.num_items), e)}

  def score_candidates(self, users, candidates, item_table):
    """users: [B]; candidates: [B, C] -> [B, C] float32."""
    u = self.user_vectors(users)
    return jnp.einsum('bd,bcd->bc', u, item_table['v'][candidates])


def build(model, *, axis_name=None, num_users, num_items, num_elements, modality, has_annotations):
  del has_annotations
  rate = float(model.dropout_rate)
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'model.dropout_rate={rate}: expected 0 <= rate < 1')
  if not model.tower_dims or any(int(w) < 1 for w in model.tower_dims):
    raise ValueError(f'model.tower_dims={tuple(model.tower_dims)}: expected positive widths')
  spec = spec_lib.plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
                        modality=modality, frozen=FROZEN, bpr=False, dataset_arrays=('cold',),
                        feature_baseline=True)  # defined on pre-extracted CNN features
  return DropoutNet(spec, tuple(int(w) for w in model.tower_dims), rate, axis_name)
