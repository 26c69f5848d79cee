"""CLCRec (Wei et al., "Contrastive Learning for Cold-start Recommendation",
ACM MM 2021).

Users and items have collaborative embeddings p_u, q_i; a content encoder maps
an item's content to c_i = Dense_d(leaky_relu(Dense_256([norm(e_i); norm(t_i)])))
with e_i the image/feature encoder's output and t_i the mean of the item's
annotation element embeddings (the authors' encoder over normalised visual /
acoustic / textual features, with learned word embeddings for text). Two
InfoNCE objectives with temperature tau = `model.temperature`:

- item-content (weight lambda = `model.contrast_weight`): anchor norm(q_i),
  candidates norm(c_k), the positive being the item's own content;
- user-item (weight 1 - lambda): anchor p_u, candidates the items'
  representations, each item's q_k replaced by c_k with probability
  `model.content_sample_rate` (the authors' "hybrid" sampling, 'dropout' rng).

Negatives are in-batch: every positive and negative item of the batch (all
devices under pmap), without the filler rows (weight 0) and without other
copies of the anchor's own positive item. Scores are p_u . q_i for warm items
and p_u . c_i for cold items (the dataset's cold flag, a frozen param `cold`
written after init, spec.dataset_arrays). No BPR term (spec.bpr=False); L2 is
the project's, on p_u, q_i, q_j.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cierec_jax.models import embed
from cierec_jax.models import gates
from cierec_jax.models import in_batch
from cierec_jax.models import recommender
from cierec_jax.models import resnet
from cierec_jax.models import spec as spec_lib

HIDDEN = 256  # the authors' content encoder width


def info_nce(anchors, candidates, positive, valid, temperature: float):
  """-log softmax over the valid candidates of anchor . candidate / tau, at the positive.

  anchors: [B, d]; candidates: [N, d]; positive: [B] int column of each
  anchor's positive; valid: [B, N] bool (the positive must be valid) -> [B].
  """
  logits = jnp.matmul(anchors, candidates.T, precision=jax.lax.Precision.HIGHEST) / temperature
  logits = jnp.where(valid, logits, -jnp.inf)
  return (jax.nn.logsumexp(logits, axis=-1)
          - jnp.take_along_axis(logits, positive[:, None], axis=-1)[:, 0])


class CLCRec(nn.Module):
  spec: spec_lib.ModelSpec
  temperature: float = 1.0
  contrast_weight: float = 0.5
  content_sample_rate: float = 0.5
  axis_name: str | None = None

  def setup(self):
    s, d = self.spec, self.spec.embed_dim
    self.user_embed = embed.Embed(s.num_users, d, embedding_init=recommender.EMBED_INIT)
    self.item_embed = embed.Embed(s.num_items, d, embedding_init=recommender.EMBED_INIT)
    self.cold = self.param('cold', nn.initializers.zeros, (s.num_items,))
    self.encoder = resnet.create(s, self.axis_name)
    if s.reads_annotations:
      self.elements = embed.Embed(s.num_elements, d, embedding_init=nn.initializers.normal(0.1))
    self.content_hidden = nn.Dense(HIDDEN)
    self.content_out = nn.Dense(d)

  def encode(self, content, train: bool):
    """content: [N, ...] -> e: [N, D]."""
    return self.encoder(content, train)

  def content(self, e, elements, lengths):
    """e: [N, D]; elements: [N, L]; lengths: [N] -> c: [N, d] content embeddings.
    Items without annotation (or with it withheld) contribute a zero text part."""
    parts = [gates.safe_normalize(e)]
    if self.spec.reads_annotations:
      mask = (jnp.arange(elements.shape[1])[None] < lengths[:, None]).astype(jnp.float32)
      mean = jnp.sum(self.elements(elements) * mask[..., None], 1) / jnp.maximum(
          jnp.sum(mask, 1, keepdims=True), 1.0)
      parts.append(gates.safe_normalize(mean))
    return self.content_out(nn.leaky_relu(self.content_hidden(jnp.concatenate(parts, -1))))

  def _represent(self, items, c):
    """The scored representation: q_i for warm items, c_i for cold ones."""
    cold = jax.lax.stop_gradient(self.cold[items])[:, None] > 0
    return jnp.where(cold, c, self.item_embed(items))

  def __call__(self, batch, scales=None, train: bool = True):
    """Scores a batch of triples; in training `losses`: 'item_content' and
    'user_item' [B], each InfoNCE term times its weight."""
    del scales
    b = batch['user'].shape[0]
    items = jnp.concatenate([batch['pos'], batch['neg']])
    e = self.encode(jnp.concatenate([batch['pos_content'], batch['neg_content']]), train)
    c = self.content(e, jnp.concatenate([batch['pos_elements'], batch['neg_elements']]),
                     jnp.concatenate([batch['pos_lengths'], batch['neg_lengths']]))
    p, q = self.user_embed(batch['user']), self.item_embed(items)
    rep_pos, rep_neg = jnp.split(self._represent(items, c), 2)
    out = {'pos': jnp.sum(p * rep_pos, -1), 'neg': jnp.sum(p * rep_neg, -1),
           'reg': jnp.sum(p ** 2, -1) + jnp.sum(q[:b] ** 2, -1) + jnp.sum(q[b:] ** 2, -1)}
    if train:
      wide = lambda x: in_batch.batch_wide(x, self.axis_name)
      positive, valid = in_batch.candidates(batch['pos'], items, jnp.tile(batch['weight'], 2),
                                            self.axis_name)
      item_content = info_nce(gates.safe_normalize(q[:b]), wide(gates.safe_normalize(c)), positive,
                              valid, self.temperature)
      swap = jax.random.bernoulli(self.make_rng('dropout'), self.content_sample_rate, (2 * b,))
      user_item = info_nce(p, wide(jnp.where(swap[:, None], c, q)), positive, valid, self.temperature)
      lam = self.contrast_weight
      out['losses'] = {'item_content': lam * item_content, 'user_item': (1.0 - lam) * user_item}
    return out

  def item_table(self, e, elements, lengths):
    """e: [I, D]; elements: [I, L]; lengths: [I] -> {'r': [I, d]} scored representations."""
    items = jnp.arange(self.spec.num_items)
    return {'r': self._represent(items, self.content(e, elements, lengths))}

  def score_candidates(self, users, candidates, item_table):
    """users: [B]; candidates: [B, C] -> [B, C] float32 p_u . r_i."""
    return jnp.einsum('bd,bcd->bc', self.user_embed(users), item_table['r'][candidates])


def build(model, *, axis_name=None, num_users, num_items, num_elements, modality, has_annotations):
  if float(model.temperature) <= 0:
    raise ValueError(f'model.temperature={model.temperature}: expected > 0')
  for field in ('contrast_weight', 'content_sample_rate'):
    if not 0.0 <= float(model[field]) <= 1.0:
      raise ValueError(f'model.{field}={model[field]}: expected a value in [0, 1]')
  spec = spec_lib.plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
                        modality=modality, reads_annotations=bool(has_annotations), frozen=('cold',),
                        bpr=False, dataset_arrays=('cold',), batch_wide=True,
                        feature_baseline=True)  # defined on pre-extracted content features
  return CLCRec(spec, float(model.temperature), float(model.contrast_weight),
                float(model.content_sample_rate), axis_name)
