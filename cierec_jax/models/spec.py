"""Which components a named model has, checked once when it is built."""

import dataclasses

from cierec_jax.models import conv_ops

NAMES = ('mf', 'vbpr', 'mf_image', 'mf_semantics', 'cierec')  # built by recommender.Recommender
BACKBONES = ('mf', 'vbpr')
ENCODERS = ('auto', 'resnet18', 'features')


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model's structure (DESIGN 4.1).

  uses_q / uses_v / uses_s: the parts fused into f_i; visual_gate and
  inference_gate: TA forms of v_i and c_i; semantic_from_c: s_i starts from
  c_i (CIERec) rather than a learned token (mf_semantics); vbpr: the VBPR
  head; gr: gradient gates and policies; pi: annotation tokens enter s_i.
  """
  name: str
  num_users: int
  num_items: int
  num_elements: int
  embed_dim: int
  feature_dim: int
  encoder: str | None  # 'resnet18' | 'features' | None (no content encoder)
  encoder_width: int
  conv_impl: str  # how the encoder computes (models/conv_ops.py); never changes results
  gate_activation: str
  gr_actions: tuple
  uses_q: bool = False
  uses_v: bool = False
  uses_s: bool = False
  visual_gate: bool = False
  inference_gate: bool = False
  semantic_from_c: bool = False
  vbpr: bool = False
  gr: bool = False
  pi: bool = False
  # Scoring reads the items' annotation elements (evaluated with and without them).
  reads_annotations: bool = False
  # Top-level params subtrees the optimiser leaves unchanged (optim.FROZEN).
  frozen: tuple = ()

  @property
  def ci(self) -> bool:
    return self.semantic_from_c

  @property
  def num_parts(self) -> int:
    return int(self.uses_q) + int(self.uses_v) + int(self.uses_s)


def resolve_encoder(model, modality: str) -> str:
  """The encoder that reads the dataset's items: model.encoder, or by modality for 'auto'."""
  if model.encoder not in ENCODERS:
    raise ValueError(f'model.encoder={model.encoder!r}: expected one of {ENCODERS}')
  want = 'resnet18' if modality == 'image' else 'features'
  encoder = want if model.encoder == 'auto' else model.encoder
  if encoder != want:
    raise ValueError(f'model.encoder={model.encoder!r} cannot read the dataset\'s {modality} '
                     f"items; use {want!r} or 'auto'")
  return encoder


def plain(model, *, num_users: int, num_items: int, num_elements: int, modality: str,
          uses_encoder: bool = True, **flags) -> ModelSpec:
  """The fields every model shares, from config.model and the dataset; `flags`
  sets the structural fields (all False by default)."""
  if len(tuple(model.gr_actions)) < 1:
    raise ValueError('model.gr_actions must list at least one lambda')
  encoder = resolve_encoder(model, modality) if uses_encoder else None
  conv_ops.resolve(model.conv_impl)  # a bad value fails here, naming the field
  return ModelSpec(
      name=model.name, num_users=num_users, num_items=num_items, num_elements=num_elements,
      embed_dim=int(model.embed_dim), feature_dim=int(model.feature_dim), encoder=encoder,
      encoder_width=int(model.encoder_width), conv_impl=str(model.conv_impl),
      gate_activation=model.gate_activation,
      gr_actions=tuple(float(a) for a in model.gr_actions), **flags)


def create(model, *, num_users: int, num_items: int, num_elements: int, modality: str,
           has_annotations: bool) -> ModelSpec:
  """Builds the spec of a Recommender model (NAMES) from config.model and the
  dataset; impossible combinations are errors that name the fields."""
  name, backbone = model.name, model.backbone
  if name not in NAMES:
    raise ValueError(f'model.name={name!r}: expected one of {NAMES}')
  if backbone not in BACKBONES:
    raise ValueError(f'model.backbone={backbone!r}: expected one of {BACKBONES}')
  resolve_encoder(model, modality)
  uses_encoder = True
  flags = dict(uses_q=True)
  if name == 'mf':
    uses_encoder = False
  elif name == 'vbpr':
    flags.update(vbpr=True)
  elif name == 'mf_image':
    flags.update(uses_q=False, uses_v=True)
  elif name == 'mf_semantics':
    if not has_annotations:
      raise ValueError('model.name=mf_semantics needs annotations, and this dataset has none')
    uses_encoder = False
    flags.update(uses_q=False, uses_s=True, pi=True)
  else:  # cierec
    if model.pi and not model.ci:
      raise ValueError('model.pi=True needs model.ci=True: the annotation tokens extend the '
                       'inferred feature c_i in the semantic LSTM (eq. 5)')
    if model.gr and not model.ci:
      raise ValueError('model.gr=True needs model.ci=True: the semantic gradient gate sits on '
                       'the e_i -> inference-gate path')
    if model.pi and not has_annotations:
      raise ValueError('model.pi=True needs annotations, and this dataset has none; '
                       'set model.pi=False')
    flags.update(uses_v=True, uses_s=bool(model.ci), visual_gate=bool(model.ta),
                 inference_gate=bool(model.ta and model.ci), semantic_from_c=bool(model.ci),
                 vbpr=backbone == 'vbpr', gr=bool(model.gr), pi=bool(model.pi))
  flags['reads_annotations'] = flags.get('pi', False)
  return plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
               modality=modality, uses_encoder=uses_encoder, **flags)
