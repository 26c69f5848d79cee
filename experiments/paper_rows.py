"""The rows of the paper's tables: Table II's models and Table III's ablations.

Table III's Base rows are Table II's MF(Image) and VBPR runs and its full rows
are Table II's CIERec runs (same label, overrides and learning rate), so a
grid root shared by table2 and table3 trains each of them once, as the paper's
identical digits imply.
"""

from cierec_jax import stages
from experiments import grid

MODELS = (('MF', (('model.name', 'mf'),)),  # Table II
          ('VBPR', (('model.name', 'vbpr'),)),
          ('MF(Image)', (('model.name', 'mf_image'),)),
          ('MF(Semantics)', (('model.name', 'mf_semantics'),)),
          ('VECF', (('model.name', 'vecf'),)),
          ('HAFR-non-i', (('model.name', 'hafr'),)),
          ('PiNet', (('model.name', 'pinet'),)),
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
# Two-stage models start from a trained base (stages.PRETRAINED): in the grids,
# from the base row's Table II run of the same seed (the base at its own tuned
# learning rate), so no seed trains a second MF or VBPR.
_LABELS = {dict(o)['model.name']: label for label, o in MODELS if dict(o)['model.name'] != 'cierec'}
STAGED = {name: _LABELS[base] for name, base in stages.PRETRAINED.items()}
# Table III rows that are Table II models, per backbone.
SAME_AS_TABLE2 = {('mf', 'Base'): 'MF(Image)', ('vbpr', 'Base'): 'VBPR',
                  ('mf', 'Base+CI+TA+GR+PI'): 'CIERec(MF)', ('vbpr', 'Base+CI+TA+GR+PI'): 'CIERec(VBPR)'}


def model_key(overrides) -> str:
  """The config.tuned_lr / tuned_weight_l2 key of a row: the model name, with the backbone for cierec."""
  o = dict(overrides)
  return f"cierec_{o['model.backbone']}" if o['model.name'] == 'cierec' else o['model.name']


def with_tuned(config, overrides) -> tuple:
  """Adds the row's valid-selected learning rate and kernel penalty
  (config.tuned_lr, config.tuned_weight_l2) to its overrides."""
  key = model_key(overrides)
  return tuple(overrides) + (('train.lr', float(config.tuned_lr[key])),
                             ('train.weight_l2', float(config.tuned_weight_l2[key])))


def select(labels=None) -> list:
  """MODELS restricted to `labels` (None or empty: all), refusing unknown labels."""
  unknown = set(labels or ()) - {label for label, _ in MODELS}
  if unknown:
    raise ValueError(f'unknown Table II rows {sorted(unknown)}; expected labels of {[m for m, _ in MODELS]}')
  return [(label, o) for label, o in MODELS if not labels or label in labels]


def table2_run(config, label: str, overrides, seed: int, lr: float | None = None,
               weight_l2: float | None = None) -> grid.Run:
  """A Table II model's run at `lr` and `weight_l2` (defaults: its tuned
  values). A two-stage model starts from its base row's run of the same seed
  at the base's tuned values."""
  overrides = tuple(overrides)
  key = model_key(overrides)
  lr = float(config.tuned_lr[key]) if lr is None else float(lr)
  weight_l2 = float(config.tuned_weight_l2[key]) if weight_l2 is None else float(weight_l2)
  base = STAGED.get(dict(overrides)['model.name'])
  init = table2_run(config, base, dict(MODELS)[base], seed) if base else None
  return grid.Run(label, overrides + (('train.lr', lr), ('train.weight_l2', weight_l2)), seed, init)


def table2_runs(config, seeds: int, labels=None):
  """Table II's runs for each seed; labels: a subset of MODELS' labels (None: all)."""
  return [table2_run(config, label, o, s) for label, o in select(labels) for s in range(seeds)]


def ablation_runs(config, seeds: int, backbones=BACKBONES, rows=ROWS):
  """Table III: [(backbone, row label, Run)] for each ablation row, backbone
  and seed. Rows that are Table II models are those runs; the others run at
  the backbone's CIERec learning rate (the paper does not say how it tuned them)."""
  out = []
  for backbone in backbones:
    for label, flags_ in rows:
      same = SAME_AS_TABLE2.get((backbone, label))
      if same:
        out += [(backbone, label, run) for run in table2_runs(config, seeds, (same,))]
        continue
      overrides = with_tuned(config, (('model.name', 'cierec'), ('model.backbone', backbone)) + tuple(
          (f'model.{k}', v) for k, v in flags_.items()))
      out += [(backbone, label, grid.Run(f'CIERec({backbone.upper()}) {label}', overrides, s))
              for s in range(seeds)]
  return out


# Table II's cells (kept here, free of absl flags, so that tests import them).
TABLE2_METRICS = ('recall@10', 'ndcg@10')
WITHHELD = ', annotations withheld'


def table2_header(subsets) -> list:
  title = lambda s: s.replace('_', ' ').capitalize()
  return ['model'] + [f"{title(s)} {'R' if m.startswith('recall') else 'NDCG'}@10"
                      for s in subsets for m in TABLE2_METRICS]


def table2_rows(runs, results, subsets) -> list:
  """[(label, cells)]: each model's row, then its withheld row when its runs have one."""
  out = []
  for label in dict.fromkeys(r.label for r in runs):
    mine = [results[r] for r in runs if r.label == label]
    for split, suffix in (('test', ''), ('test_withheld', WITHHELD)):
      if grid.has_split(mine, split):
        out.append((label + suffix, [grid.mean_std([grid.metric(x, s, m, split) for x in mine])
                                     for s in subsets for m in TABLE2_METRICS]))
  return out
