"""The tuning budget every model gets: a learning-rate sweep, selected on valid.

  python -m experiments.tune --config=configs/default.py --workdir=runs/tune

Trains each Table II model at each `--lrs` value (seed 0) and writes tune.md /
tune.csv with valid Recall@10 (all) at the best epoch. Each model's best value
is printed as the `tuned_lr` line that goes into the dataset config, so every
model gets the same budget (the same values tried) and its own best. The test
split is never looked at.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/tune', 'Root of the runs and the table.')
_LRS = flags.DEFINE_list('lrs', ['0.01', '0.02', '0.05'], 'Adagrad learning rates to try.')
_QUICK = flags.DEFINE_bool('quick', False, 'One epoch per run: a smoke run.')
_MODELS = flags.DEFINE_list('models', [], 'Row labels to tune (default: every Table II row).')


def main(_):
  lrs = [float(x) for x in _LRS.value]
  models = paper_rows.select(_MODELS.value)
  runs = [grid.Run(f'{label} lr={lr:g}', overrides + (('train.lr', lr),), 0)
          for label, overrides in models for lr in lrs]
  results = grid.run_grid(_CONFIG.value, runs, _WORKDIR.value, quick=_QUICK.value)
  valid = np.array([[results[r]['valid']['all']['recall@10']['mean'] for r in runs if r.label == f'{m} lr={lr:g}']
                    for m, _ in models for lr in lrs]).reshape(len(models), len(lrs))
  ranks = (-valid).argsort(1).argsort(1) + 1
  rows = [(m, [f'{v:.4f}' for v in valid[k]]) for k, (m, _) in enumerate(models)]
  rows.append(('mean rank', [f'{r:.2f}' for r in ranks.mean(0)]))
  print(grid.write_table(rows, ['model'] + [f'lr={lr:g} valid R@10' for lr in lrs],
                         os.path.join(_WORKDIR.value, 'tune')))
  keys = [paper_rows.model_key(o) for _, o in models]
  best = {key: lrs[int(valid[k].argmax())] for k, key in enumerate(keys)}
  print('c.tuned_lr.update(dict(' + ', '.join(f'{k}={v:g}' for k, v in best.items()) + '))')


if __name__ == '__main__':
  app.run(main)
