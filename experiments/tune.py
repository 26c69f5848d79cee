"""The tuning budget every model gets: a learning-rate sweep, selected on valid.

  python -m experiments.tune --config=configs/default.py --workdir=runs/paper

Trains each Table II model (seed 0, early stopping on valid) at each `--lrs`
value, then extends that model's grid one step along lr_ladder.LADDER past any edge
where its best value sits, until the best is inside the grid or the ladder
(the paper's 1e-4 ... 0.5) ends; such a model is flagged. Writes tune.md /
tune.csv (valid Recall@10 (all) at the best epoch per value tried) and prints
the `tuned_lr` line that goes into the dataset config. The test split is
never looked at. The runs are Table II's seed-0 workdirs, so table2 with the
same --workdir reuses the run at each chosen rate; two-stage models (AMF, AMR,
DropoutNet) are tuned after the others, from their base at its chosen rate.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import lr_ladder
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/paper', 'Root of the runs and the table (share it with table2).')
_LRS = flags.DEFINE_list('lrs', ['0.01', '0.02', '0.05'], 'Adagrad learning rates tried first.')
_MODELS = flags.DEFINE_list('models', [], 'Table II labels to tune (default: all).')
_ROUNDS = flags.DEFINE_integer('max_extensions', 12, 'Grid extensions per model at most.')
_QUICK = flags.DEFINE_bool('quick', False, 'One epoch per run: a smoke run.')

def sweep(config, models, lrs, root: str, quick: bool = False, max_extensions: int = 12) -> dict:
  """{label: {lr: valid R@10}} after extending every model's grid past its edges.

  Seed 0 runs, in the same workdirs as Table II's (paper_rows.table2_run), so
  the run at the chosen rate is Table II's seed 0. Two-stage models start from
  their base's run at config.tuned_lr.
  """
  pending = {label: sorted(lrs) for label, _ in models}
  tried = {label: {} for label, _ in models}
  overrides = dict(models)
  for _ in range(max_extensions + 1):
    if not any(pending.values()):
      break
    runs = {paper_rows.table2_run(config, label, overrides[label], 0, lr): (label, lr)
            for label, values in pending.items() for lr in values}
    results = grid.run_grid(config, list(runs), root, quick=quick)
    for run, (label, lr) in runs.items():
      tried[label][lr] = results[run]['valid']['all']['recall@10']['mean']
    pending = {label: lr_ladder.extend(values) for label, values in tried.items()}
  return tried


def main(_):
  models = paper_rows.select(_MODELS.value)
  config = _CONFIG.value.copy_and_resolve_references()
  lrs = [float(x) for x in _LRS.value]
  # Two-stage models are tuned from their base at the base's chosen rate.
  staged = [(label, o) for label, o in models if dict(o)['model.name'] in paper_rows.STAGED]
  tried = sweep(config, [m for m in models if m not in staged], lrs, _WORKDIR.value, _QUICK.value,
                _ROUNDS.value)
  for label, o in models:
    if label in tried:
      config.tuned_lr[paper_rows.model_key(o)] = lr_ladder.best_lr(tried[label])
  tried.update(sweep(config, staged, lrs, _WORKDIR.value, _QUICK.value, _ROUNDS.value))
  rows, best = [], {}
  for label, o in models:
    values = tried[label]
    chosen = lr_ladder.best_lr(values)
    best[paper_rows.model_key(o)] = chosen
    edge = lr_ladder.at_edge(values)
    rows.append((label, [', '.join(f'{lr:g}: {values[lr]:.4f}' for lr in sorted(values)), f'{chosen:g}',
                         'EDGE' if edge else 'inside']))
    if edge:
      print(f'WARNING: {label}: the best learning rate {chosen:g} is at an edge of its grid '
            f'{sorted(values)}', flush=True)
  print(grid.write_table(rows, ['model', 'lr: valid R@10', 'chosen', 'grid edge'],
                         os.path.join(_WORKDIR.value, 'tune')))
  print('c.tuned_lr.update(dict(' + ', '.join(f'{k}={v:g}' for k, v in best.items()) + '))')


if __name__ == '__main__':
  app.run(main)
