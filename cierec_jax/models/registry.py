"""model.name -> the module that implements it.

Every model is a pure linen module that answers the same contract, so the
sampler, the train step, the optimiser routing and the evaluator serve all of
them unchanged:

- `spec`: a `spec.ModelSpec` (dims, encoder, `gr`, `reads_annotations`,
  `frozen`, `bpr`, `dataset_arrays`, ...).
- `__call__(batch, scales=None, train=True)` scores a batch of BPR triples
  (the sampler's arrays, see `sampler.with_item_inputs`) and returns a dict:
  `pos`, `neg`: [B] float32 scores; `reg`: [B] float32 squared norms that
  `train.l2` multiplies; optionally `losses`: {name: [B] float32} extra
  per-example loss terms, already scaled by the model's own weights, which
  the train step averages with the batch weights, adds to the loss and logs.
  In training a `'dropout'` rng stream is available (`self.make_rng`);
  `train=False` must be deterministic. The train step adds the BPR term of
  pos/neg unless `spec.bpr` is False (it is then logged only).
- `encode(content, train)`: [N, ...] source modality -> [N, ...] encoder
  output (None without an encoder), computed once per item per evaluation.
- `item_table(e, elements, lengths)`: every item's user-independent parts.
- `score_candidates(users, candidates, item_table)`: users [B], candidates
  [B, C] -> [B, C] float32 scores, equal to the training-mode scores with
  `train=False` (a test per model checks it).
"""

import flax.linen as nn

from cierec_jax.models import amf
from cierec_jax.models import amr
from cierec_jax.models import clcrec
from cierec_jax.models import dropoutnet
from cierec_jax.models import hafr
from cierec_jax.models import pinet
from cierec_jax.models import recommender
from cierec_jax.models import spec as spec_lib
from cierec_jax.models import vecf

# Models beyond the Recommender family: name -> build(model_config, axis_name=..., **dims).
EXTRA = {
    'vecf': vecf.build,
    'hafr': hafr.build,
    'pinet': pinet.build,
    'amf': amf.build,
    'amr': amr.build,
    'dropoutnet': dropoutnet.build,
    'clcrec': clcrec.build,
}


def names() -> tuple:
  return spec_lib.NAMES + tuple(EXTRA)


def create(model_config, *, num_users: int, num_items: int, num_elements: int, modality: str,
           has_annotations: bool, axis_name: str | None = None) -> nn.Module:
  """Builds config.model's model for a dataset of these dimensions.

  axis_name: BatchNorm's cross-device axis under pmap.
  """
  dims = dict(num_users=num_users, num_items=num_items, num_elements=num_elements,
              modality=modality, has_annotations=has_annotations)
  name = model_config.name
  if name in spec_lib.NAMES:
    return recommender.Recommender(spec_lib.create(model_config, **dims), axis_name=axis_name)
  if name in EXTRA:
    return EXTRA[name](model_config, axis_name=axis_name, **dims)
  raise ValueError(f'model.name={name!r}: expected one of {names()}')
