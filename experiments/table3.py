"""The paper's Table III: the ablation rows for both backbones (Recall@10).

  python -m experiments.table3 --config=configs/default.py --seeds=5 --workdir=runs/table3

Base (all of CI/TA/GR/PI off), +CI, +CI+TA, +CI+TA+GR and +CI+TA+GR+PI, each
for CIERec(MF) and CIERec(VBPR); writes table3.md / table3.csv.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/table3', 'Root of the runs and tables.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Training seeds per row.')
_QUICK = flags.DEFINE_bool('quick', False, 'One seed, one epoch: a smoke run.')
SUBSETS = ('cold', 'warm', 'all')

def main(_):
  seeds = 1 if _QUICK.value else _SEEDS.value
  runs = paper_rows.runs_for(_CONFIG.value, seeds)
  results = grid.run_grid(_CONFIG.value, runs, _WORKDIR.value, quick=_QUICK.value)
  header = ['row'] + [f'{b.upper()} {s.capitalize()} R@10' for b in paper_rows.BACKBONES for s in SUBSETS]
  table = []
  for label, _ in paper_rows.ROWS:
    cells = []
    for b in paper_rows.BACKBONES:
      mine = [results[r] for r in runs if r.label == f'CIERec({b.upper()}) {label}']
      cells += [grid.mean_std([grid.metric(x, s, 'recall@10') for x in mine]) for s in SUBSETS]
    table.append((label, cells))
  print(grid.write_table(table, header, os.path.join(_WORKDIR.value, 'table3')))


if __name__ == '__main__':
  app.run(main)
