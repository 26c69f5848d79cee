"""AMF: BPR-MF trained with adversarial perturbations of the user and item
embeddings (APR, He et al., SIGIR 2018).

loss = BPR(Theta) + adv_weight * BPR(Theta + Delta), Delta = the fast-gradient
perturbation of P and Q (adversarial.fast_gradient) inside an epsilon ball.
The parameters are MF's, so the run starts from a trained MF (the paper's
pretraining; train.init_from or the `stage_mf` sub-run).
"""

from cierec_jax.models import adversarial
from cierec_jax.models import heads
from cierec_jax.models import recommender
from cierec_jax.train_step import bpr


class AMF(recommender.Recommender):
  """MF (the Recommender built from the 'mf' spec) plus the adversarial term."""
  epsilon: float = 0.5
  weight: float = 1.0

  def __call__(self, batch, scales=None, train: bool = True):
    """As Recommender, plus in training `losses['adversarial']`: [B] adv_weight *
    BPR at the perturbed embeddings, and `deltas`: [[d_user], [d_pos, d_neg]]
    the [B, d] perturbations."""
    out = super().__call__(batch, scales, train)
    if not train:
      return out
    user = self.users(batch['user'])
    pos, neg = (self.items(batch[s], None, batch[f'{s}_elements'], batch[f'{s}_lengths'])
                for s in ('pos', 'neg'))

    def perturbed_bpr(deltas):
      """[B] BPR of the triples with p_u, q_i, q_j moved by deltas."""
      (d_u,), (d_i, d_j) = deltas
      p = user['p'] + d_u
      y_i = heads.mf_score(self.alpha, user['b'], pos['b'], p, pos['q'] + d_i)
      y_j = heads.mf_score(self.alpha, user['b'], neg['b'], p, neg['q'] + d_j)
      return bpr(y_i - y_j)

    out.update(adversarial.outputs(
        perturbed_bpr, batch['weight'], [[batch['user']], [batch['pos'], batch['neg']]],
        [[user['p']], [pos['q'], neg['q']]], self.epsilon, self.weight, self.axis_name))
    return out


build = adversarial.builder(AMF, 'mf')
