"""The paper's Table II: every model on the same data and budget.

  python -m experiments.table2 --config=configs/default.py --seeds=5 --workdir=runs/paper

Trains each row of paper_rows.MODELS at its tuned learning rate and writes
- table2.md / .csv: R@10 and NDCG@10 for the paper's Cold / Warm / All (the
  user partition), mean ± std over seeds; a model whose scores read
  annotations gets a second row with them withheld at test (the
  privileged-information setting);
- table2_items.md / .csv: the same runs on the item partition (Cold item /
  Warm item / All), the item cold-start task.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/paper', 'Root of the runs and tables.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Training seeds per model.')
_MODELS = flags.DEFINE_list('models', [], 'Table II labels to run (default: all).')
_QUICK = flags.DEFINE_bool('quick', False, 'One seed, one epoch: a smoke run.')

PARTITIONS = {'table2': ('cold', 'warm', 'all'), 'table2_items': ('cold_item', 'warm_item', 'all')}


def main(_):
  seeds = 1 if _QUICK.value else _SEEDS.value
  runs = paper_rows.table2_runs(_CONFIG.value, seeds, _MODELS.value or None)
  results = grid.run_grid(_CONFIG.value, runs, _WORKDIR.value, quick=_QUICK.value)
  for stem, subsets in PARTITIONS.items():
    print(grid.write_table(paper_rows.table2_rows(runs, results, subsets),
                           paper_rows.table2_header(subsets), os.path.join(_WORKDIR.value, stem)))


if __name__ == '__main__':
  app.run(main)
