"""The tuning budget every model gets: learning rate, then kernel penalty, selected on valid.

  python -m experiments.tune --config=configs/default.py --workdir=runs/synthetic

Trains each Table II model (seed 0, early stopping on valid) at each `--lrs`
value, extending that model's grid one step along ladders.LR past any edge
where its best value sits, until the best is inside the grid or the ladder
(the paper's 1e-4 ... 0.5) ends; such a model is flagged. Then, at the chosen
rate, the same for `train.weight_l2` (`--weight_l2s`, ladder ladders.WEIGHT_L2;
0, no penalty, is a natural end): VBPR's content layers, for one, overfit
without it (README, Hyper-parameters). Writes tune.md / tune.csv (valid
Recall@10 (all) at the best epoch per value tried) and prints the `tuned_lr`
and `tuned_weight_l2` lines that go into the dataset config. The test split is
never looked at. The runs are Table II's seed-0 workdirs, so table2 with the
same --workdir reuses the run at the chosen values; two-stage models (AMF,
AMR, DropoutNet) are tuned after the others, from their base at its chosen values.
"""

import math
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import ladders
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/paper', 'Root of the runs and the table (share it with table2).')
_LRS = flags.DEFINE_list('lrs', ['0.01', '0.02', '0.05'], 'Adagrad learning rates tried first.')
_MODELS = flags.DEFINE_list('models', [], 'Table II labels to tune (default: all).')
_WEIGHT_L2S = flags.DEFINE_list('weight_l2s', ['0', '0.01', '0.1'],
                                 'train.weight_l2 values tried first, at the chosen rate.')
_ROUNDS = flags.DEFINE_integer('max_extensions', 12, 'Grid extensions per model and field at most.')
_QUICK = flags.DEFINE_bool('quick', False, 'One epoch per run: a smoke run.')

FIELDS = {'lr': (ladders.LR, ()), 'weight_l2': (ladders.WEIGHT_L2, (0.0,))}  # ladder, natural ends


def sweep(config, models, field: str, start, root: str, quick: bool = False,
          max_extensions: int = 12) -> dict:
  """{label: {value: valid R@10}} for one field ('lr' or 'weight_l2'), the
  other at config's tuned value, after extending every model's grid past its edges.

  Seed 0 runs, in the same workdirs as Table II's (paper_rows.table2_run), so
  the run at the chosen values is Table II's seed 0. Two-stage models start
  from their base's run at its tuned values.
  """
  ladder = FIELDS[field][0]
  pending = {label: sorted(start) for label, _ in models}
  tried = {label: {} for label, _ in models}
  overrides = dict(models)
  for _ in range(max_extensions + 1):
    if not any(pending.values()):
      break
    runs = {paper_rows.table2_run(config, label, overrides[label], 0, **{field: v}): (label, v)
            for label, values in pending.items() for v in values}
    results = grid.run_grid(config, list(runs), root, quick=quick)
    for run, (label, v) in runs.items():
      r = results[run]  # a diverged value ranks below every finished one
      tried[label][v] = -math.inf if grid.diverged(r) else r['valid']['all']['recall@10']['mean']
    pending = {label: ladders.extend(values, ladder) for label, values in tried.items()}
  return tried


def tune(config, models, start: dict, root: str, quick: bool, max_extensions: int) -> dict:
  """{field: {label: {value: valid R@10}}}: each field in turn (FIELDS' order),
  models without a stage before the two-stage ones, whose base must be tuned
  first; config's tuned_<field> is updated with each choice (config: a copy
  the caller owns)."""
  staged = [(label, o) for label, o in models if dict(o)['model.name'] in paper_rows.STAGED]
  tried = {field: {} for field in FIELDS}
  # The models tuned here start from the plain config (train.lr, train.weight_l2),
  # not from tuned values already pasted into it: a second call walks the same
  # grids, finds every run done, and prints the same choices. Bases tuned in an
  # earlier call keep their config values.
  for field in FIELDS:
    for _, o in models:
      config[f'tuned_{field}'][paper_rows.model_key(o)] = float(config.train[field])
  for group in ([m for m in models if m not in staged], staged):
    for field in FIELDS:
      found = sweep(config, group, field, start[field], root, quick, max_extensions)
      for label, o in group:
        config[f'tuned_{field}'][paper_rows.model_key(o)] = ladders.best(found[label])
      tried[field].update(found)
  return tried


def main(_):
  models = paper_rows.select(_MODELS.value)
  config = _CONFIG.value.copy_and_resolve_references()
  start = {'lr': [float(x) for x in _LRS.value], 'weight_l2': [float(x) for x in _WEIGHT_L2S.value]}
  tried = tune(config, models, start, _WORKDIR.value, _QUICK.value, _ROUNDS.value)
  rows, header = [], ['model']
  for field in FIELDS:
    header += [f'{field}: valid R@10', f'{field} chosen', f'{field} grid edge']
  for label, o in models:
    cells = []
    for field, (_, natural_ends) in FIELDS.items():
      values = tried[field][label]
      chosen, edge = ladders.best(values), ladders.at_edge(values, natural_ends)
      cells += [', '.join(f'{v:g}: ' + ('diverged' if values[v] == -math.inf else f'{values[v]:.4f}')
                          for v in sorted(values)), f'{chosen:g}',
                'EDGE' if edge else 'inside']
      if edge:
        print(f'WARNING: {label}: the best {field} {chosen:g} is at an edge of its grid '
              f'{sorted(values)}', flush=True)
    rows.append((label, cells))
  print(grid.write_table(rows, header, os.path.join(_WORKDIR.value, 'tune')))
  for field in FIELDS:
    keys = [paper_rows.model_key(o) for _, o in models]
    print(f'c.tuned_{field}.update(dict(' + ', '.join(
        f'{k}={config[f"tuned_{field}"][k]:g}' for k in keys) + '))')


if __name__ == '__main__':
  app.run(main)
