"""The tuning budget every model gets: a learning-rate sweep, selected on valid.

  python -m experiments.tune --config=configs/default.py --workdir=runs/tune

Trains each Table II model (seed 0, early stopping on valid) at each `--lrs`
value, then extends that model's grid one step along LADDER past any edge
where its best value sits, until the best is inside the grid or the ladder
(the paper's 1e-4 ... 0.5) ends; such a model is flagged. Writes tune.md /
tune.csv (valid Recall@10 (all) at the best epoch per value tried) and prints
the `tuned_lr` line that goes into the dataset config. The test split is
never looked at.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/tune', 'Root of the runs and the table.')
_LRS = flags.DEFINE_list('lrs', ['0.01', '0.02', '0.05'], 'Adagrad learning rates tried first.')
_MODELS = flags.DEFINE_list('models', [], 'Table II labels to tune (default: all).')
_ROUNDS = flags.DEFINE_integer('max_extensions', 12, 'Grid extensions per model at most.')
_QUICK = flags.DEFINE_bool('quick', False, 'One epoch per run: a smoke run.')
_MODELS = flags.DEFINE_list('models', [], 'Row labels to tune (default: every Table II row).')

# The paper's range for the Adagrad learning rate, on a 1-2-5 log ladder.
LADDER = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def extend(tried: dict) -> list:
  """tried: {lr: valid score} -> the ladder values to add, [] when the best is
  inside the grid or at an end of the ladder."""
  lrs = sorted(tried)
  best = max(lrs, key=lambda lr: (tried[lr], -lr))  # ties: the smaller rate
  below = [x for x in LADDER if x < lrs[0]]
  above = [x for x in LADDER if x > lrs[-1]]
  if best == lrs[0] and below:
    return [below[-1]]
  if best == lrs[-1] and above:
    return [above[0]]
  return []


def at_edge(tried: dict) -> bool:
  """Whether the best value is the smallest or the largest tried."""
  lrs = sorted(tried)
  return max(lrs, key=lambda lr: (tried[lr], -lr)) in (lrs[0], lrs[-1])


def sweep(config, models, lrs, root: str, quick: bool = False, max_extensions: int = 12) -> dict:
  """{label: {lr: valid R@10}} after extending every model's grid past its edges."""
  pending = {label: sorted(lrs) for label, _ in models}
  tried = {label: {} for label, _ in models}
  overrides = dict(models)
  for _ in range(max_extensions + 1):
    if not any(pending.values()):
      break
    runs = [grid.Run(f'{label} lr={lr:g}', overrides[label] + (('train.lr', lr),), 0)
            for label, values in pending.items() for lr in values]
    results = grid.run_grid(config, runs, root, quick=quick)
    for run in runs:
      label, lr = run.label.rsplit(' lr=', 1)
      tried[label][float(lr)] = results[run]['valid']['all']['recall@10']['mean']
    pending = {label: extend(values) for label, values in tried.items()}
  return tried


def main(_):
  config = _CONFIG.value
  models = paper_rows.select(_MODELS.value)
  tried = sweep(config, models, [float(x) for x in _LRS.value], _WORKDIR.value, _QUICK.value,
                _ROUNDS.value)
  rows, best = [], {}
  for label, o in models:
    values = tried[label]
    chosen = max(sorted(values), key=lambda lr: (values[lr], -lr))
    best[paper_rows.model_key(o)] = chosen
    edge = at_edge(values)
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
