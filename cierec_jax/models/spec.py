"""Which components a named model has, checked once when it is built."""

import dataclasses

from cierec_jax.models import conv_ops

NAMES = ('mf', 'vbpr', 'mf_image', 'mf_semantics', 'cierec')  # built by recommender.Recommender
BACKBONES = ('mf', 'vbpr')
ENCODERS = ('auto', 'resnet18', 'features')
BASE = {'mf': 'mf_image', 'vbpr': 'vbpr'}  # CIERec's Base per backbone: a Table II model
# Read pre-extracted features under model.encoder='auto' (resolve_encoder), as in the paper.
FEATURE_BASELINES = ('vbpr', 'mf_image')


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
  conv_impl: str  # how the encoder computes (models/conv_ops.py); results differ by rounding only
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
  # Training drops each item's annotation with this probability (PI models).
  annotation_dropout: float = 0.0
  # The train step's BPR term on pos/neg is part of the loss; False: logged only
  # (models trained on their own `losses`: DropoutNet, CLCRec).
  bpr: bool = True
  # The loss reads other rows of the batch (in-batch negatives, per-row
  # gradient sums), so it is not a sum of per-row terms (train.batch_shards).
  batch_wide: bool = False
  # Per-item RecData arrays (e.g. 'cold') the model holds as frozen top-level
  # params of the same name, [I] float32, written from the dataset after init.
  dataset_arrays: tuple = ()
  # Reads pre-extracted per-region vectors [R, F] (the pretrained encoder's last
  # feature map, one vector per cell): VECF's regions on image datasets.
  region_features: bool = False

  @property
  def ci(self) -> bool:
    return self.semantic_from_c

  @property
  def num_parts(self) -> int:
    return int(self.uses_q) + int(self.uses_v) + int(self.uses_s)


def resolve_encoder(model, modality: str, feature_baseline: bool = False) -> str:
  """The encoder that reads the dataset's items.

  Feature datasets: 'features' (their own vectors). Image datasets:
  'resnet18' (pixels, trained end to end from model.encoder_init) or
  'features' (vectors pre-extracted once by the frozen model.encoder_init
  encoder, cierec_jax.features). 'auto' gives the paper's feature baselines
  (`feature_baseline`: VBPR, MF(Image), Base) pre-extracted features when
  there is a pretrained encoder to extract them with, else 'resnet18'.
  """
  if model.encoder not in ENCODERS:
    raise ValueError(f'model.encoder={model.encoder!r}: expected one of {ENCODERS}')
  if modality != 'image':
    if model.encoder == 'resnet18':
      raise ValueError(f"model.encoder='resnet18' cannot read the dataset's {modality} items; "
                       "use 'features' or 'auto'")
    return 'features'
  if model.encoder == 'auto':
    return 'features' if feature_baseline and model.encoder_init else 'resnet18'
  if model.encoder == 'features' and not model.encoder_init:
    raise ValueError("model.encoder='features' on the dataset's image items reads features "
                     'pre-extracted by a pretrained encoder: set model.encoder_init (README: '
                     "Pretrained encoders), or use 'resnet18' or 'auto'")
  return model.encoder


def plain(model, *, num_users: int, num_items: int, num_elements: int, modality: str,
          uses_encoder: bool = True, name: str | None = None, feature_baseline: bool = False,
          **flags) -> ModelSpec:
  """The fields every model shares, from config.model and the dataset; `flags`
  sets the structural fields (all False by default). name: the model the spec
  describes (default model.name). feature_baseline: 'auto' reads pre-extracted
  features on image datasets (resolve_encoder). model.freeze_encoder adds the
  ResNet18 encoder to `frozen`."""
  if len(tuple(model.gr_actions)) < 1:
    raise ValueError('model.gr_actions must list at least one lambda')
  encoder = resolve_encoder(model, modality, feature_baseline) if uses_encoder else None
  if model.freeze_encoder:
    if (name or model.name) not in NAMES:
      raise ValueError(f'model.freeze_encoder=True is implemented by the Recommender models '
                       f'({", ".join(NAMES)} and those built on them); model.name={model.name!r} '
                       'would still update its encoder\'s BatchNorm statistics')
    if encoder != 'resnet18':
      raise ValueError(f'model.freeze_encoder=True freezes the ResNet18 encoder, and '
                       f'model.name={model.name!r} reads {encoder or "no content"} here '
                       '(pre-extracted features are already frozen)')
    flags['frozen'] = tuple(flags.get('frozen', ())) + ('encoder',)
  conv_ops.resolve(model.conv_impl)  # a bad value fails here, naming the field
  return ModelSpec(
      name=name or model.name, num_users=num_users, num_items=num_items, num_elements=num_elements,
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
  uses_encoder = True
  flags = dict(uses_q=True)
  if name == 'cierec' and not model.ci:
    # Base: CI, TA, GR and PI all off is the backbone's Table II baseline
    # (the paper's Table III Base rows equal its MF(Image) and VBPR rows).
    on = [f'model.{f}=True' for f in ('pi', 'gr', 'ta') if model[f]]
    if on:
      raise ValueError(f'{", ".join(on)} needs model.ci=True: without CI the model is the '
                       f'Base ({BASE[backbone]}), which has no inference gate, semantic LSTM '
                       'or gradient gates')
    name = BASE[backbone]
  # The paper's VBPR, MF(Image) and hence Base use pre-extracted visual features.
  feature_baseline = name in FEATURE_BASELINES
  resolve_encoder(model, modality, feature_baseline)
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
    if model.pi and not has_annotations:
      raise ValueError('model.pi=True needs annotations, and this dataset has none; '
                       'set model.pi=False')
    flags.update(uses_v=True, uses_s=True, visual_gate=bool(model.ta),
                 inference_gate=bool(model.ta), semantic_from_c=True,
                 vbpr=backbone == 'vbpr', gr=bool(model.gr), pi=bool(model.pi))
  flags['reads_annotations'] = flags.get('pi', False)
  if flags['reads_annotations']:
    flags['annotation_dropout'] = float(model.get('annotation_dropout', 0.0))
  return plain(model, num_users=num_users, num_items=num_items, num_elements=num_elements,
               modality=modality, uses_encoder=uses_encoder, name=name,
               feature_baseline=feature_baseline, **flags)
