"""The rows of the paper's tables: Table II's models and Table III's ablations."""

from experiments import grid

MODELS = (('MF', (('model.name', 'mf'),)),  # Table II
          ('VBPR', (('model.name', 'vbpr'),)),
          ('MF(Image)', (('model.name', 'mf_image'),)),
          ('MF(Semantics)', (('model.name', 'mf_semantics'),)),
          ('DropoutNet', (('model.name', 'dropoutnet'),)),
          ('AMF', (('model.name', 'amf'),)),
          ('AMR', (('model.name', 'amr'),)),
          ('CLCRec', (('model.name', 'clcrec'),)),
          ('CIERec(MF)', (('model.name', 'cierec'), ('model.backbone', 'mf'))),
          ('CIERec(VBPR)', (('model.name', 'cierec'), ('model.backbone', 'vbpr'))))

ROWS = (('Base', dict(ci=False, ta=False, gr=False, pi=False)),  # Table III
        ('Base+CI', dict(ci=True, ta=False, gr=False, pi=False)),
        ('Base+CI+TA', dict(ci=True, ta=True, gr=False, pi=False)),
        ('Base+CI+TA+GR', dict(ci=True, ta=True, gr=True, pi=False)),
        ('Base+CI+TA+GR+PI', dict(ci=True, ta=True, gr=True, pi=True)))
BACKBONES = ('mf', 'vbpr')


def select(labels=None) -> tuple:
  """The MODELS rows with these labels, in table order (None or empty: all)."""
  if not labels:
    return MODELS
  known = [label for label, _ in MODELS]
  unknown = [label for label in labels if label not in known]
  if unknown:
    raise ValueError(f'--models: unknown rows {unknown}; expected labels from {known}')
  return tuple(row for row in MODELS if row[0] in labels)


def model_key(overrides) -> str:
  """The config.tuned_lr key of a row: the model name, with the backbone for cierec."""
  o = dict(overrides)
  return f"cierec_{o['model.backbone']}" if o['model.name'] == 'cierec' else o['model.name']


def with_tuned_lr(config, overrides) -> tuple:
  """Adds the row's valid-selected learning rate (config.tuned_lr) to its overrides."""
  return tuple(overrides) + (('train.lr', float(config.tuned_lr[model_key(overrides)])),)


def table2_runs(config, seeds: int, models=MODELS):
  return [grid.Run(label, with_tuned_lr(config, o), s) for label, o in models for s in range(seeds)]


def runs_for(config, seeds: int, backbones=BACKBONES, rows=ROWS):
  """Table III's runs: each ablation row for each backbone and seed, at the
  backbone's CIERec learning rate."""
  out = []
  for backbone in backbones:
    for label, flags_ in rows:
      overrides = with_tuned_lr(config, (('model.name', 'cierec'), ('model.backbone', backbone)) + tuple(
          (f'model.{k}', v) for k, v in flags_.items()))
      out += [grid.Run(f'CIERec({backbone.upper()}) {label}', overrides, s) for s in range(seeds)]
  return out
