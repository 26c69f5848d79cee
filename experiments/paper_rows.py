"""The rows of the paper's tables: Table II's models and Table III's ablations."""

from experiments import grid

MODELS = (('MF', (('model.name', 'mf'),)),  # Table II
          ('VBPR', (('model.name', 'vbpr'),)),
          ('MF(Image)', (('model.name', 'mf_image'),)),
          ('MF(Semantics)', (('model.name', 'mf_semantics'),)),
          ('CIERec(MF)', (('model.name', 'cierec'), ('model.backbone', 'mf'))),
          ('CIERec(VBPR)', (('model.name', 'cierec'), ('model.backbone', 'vbpr'))))

ROWS = (('Base', dict(ci=False, ta=False, gr=False, pi=False)),  # Table III
        ('Base+CI', dict(ci=True, ta=False, gr=False, pi=False)),
        ('Base+CI+TA', dict(ci=True, ta=True, gr=False, pi=False)),
        ('Base+CI+TA+GR', dict(ci=True, ta=True, gr=True, pi=False)),
        ('Base+CI+TA+GR+PI', dict(ci=True, ta=True, gr=True, pi=True)))
BACKBONES = ('mf', 'vbpr')


def runs_for(seeds: int, backbones=BACKBONES, rows=ROWS):
  """Table III's runs: each ablation row for each backbone and seed."""
  out = []
  for backbone in backbones:
    for label, flags_ in rows:
      overrides = (('model.name', 'cierec'), ('model.backbone', backbone)) + tuple(
          (f'model.{k}', v) for k, v in flags_.items())
      out += [grid.Run(f'CIERec({backbone.upper()}) {label}', overrides, s) for s in range(seeds)]
  return out
