"""AMR: VBPR trained with adversarial perturbations of the items' visual
features (Tang et al., "Adversarial Training Towards Robust Multimedia
Recommender System", TKDE 2019).

The perturbed features are the encoder outputs e_i (the paper perturbs its
pre-extracted CNN features), before VBPR's projection. Since VBPR's content
term (a_u + w) . Dense(e_i) is linear in e_i, moving e_i by delta adds
(a_u + w) . (delta @ kernel) to the score, as in the authors' code
(`emb2_q + d @ phi`). The parameters are VBPR's, so the run starts from a
trained VBPR (train.init_from or the `stage_vbpr` sub-run).
"""

import jax.numpy as jnp

from cierec_jax.models import adversarial
from cierec_jax.models import recommender
from cierec_jax.train_step import bpr


class AMR(recommender.Recommender):
  """VBPR (the Recommender built from the 'vbpr' spec) plus the adversarial term."""
  epsilon: float = 0.5
  weight: float = 1.0

  def __call__(self, batch, scales=None, train: bool = True):
    """As Recommender, plus in training `losses['adversarial']`: [B] adv_weight *
    BPR at the perturbed features, and `deltas`: [[d_pos, d_neg]] the [B, D]
    perturbations of e_pos, e_neg."""
    out = super().__call__(batch, scales, train)
    if not train:
      return out
    a = self.user_content(batch['user']) + self.content_bias  # [B, d] a_u + w
    kernel = self.vbpr_projection.variables['params']['kernel']  # [D, d]
    diff = out['pos'] - out['neg']

    def perturbed_bpr(deltas):
      """[B] BPR of the triples with e_i, e_j moved by deltas."""
      ((d_i, d_j),) = deltas
      return bpr(diff + jnp.sum(a * ((d_i - d_j) @ kernel), axis=-1))

    rows = jnp.zeros((len(diff), self.spec.feature_dim), jnp.float32)  # the e_i lookups' shapes
    out.update(adversarial.outputs(perturbed_bpr, batch['weight'], [[batch['pos'], batch['neg']]],
                                   [[rows, rows]], self.epsilon, self.weight, self.axis_name))
    return out


build = adversarial.builder(AMR, 'vbpr')
