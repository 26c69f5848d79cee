"""The ablation rows of the paper's Table III, shared by table3.py and fig3.py."""

from experiments import grid

ROWS = (('Base', dict(ci=False, ta=False, gr=False, pi=False)),
        ('Base+CI', dict(ci=True, ta=False, gr=False, pi=False)),
        ('Base+CI+TA', dict(ci=True, ta=True, gr=False, pi=False)),
        ('Base+CI+TA+GR', dict(ci=True, ta=True, gr=True, pi=False)),
        ('Base+CI+TA+GR+PI', dict(ci=True, ta=True, gr=True, pi=True)))
BACKBONES = ('mf', 'vbpr')


def runs_for(seeds: int, backbones=BACKBONES, rows=ROWS):
  out = []
  for backbone in backbones:
    for label, flags_ in rows:
      overrides = (('model.name', 'cierec'), ('model.backbone', backbone)) + tuple(
          (f'model.{k}', v) for k, v in flags_.items())
      out += [grid.Run(f'CIERec({backbone.upper()}) {label}', overrides, s) for s in range(seeds)]
  return out
