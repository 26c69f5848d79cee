"""The paper's Table II: backbones, single-modality variants and CIERec.

  python -m experiments.table2 --config=configs/default.py --seeds=5 --workdir=runs/table2

Trains mf, vbpr, mf_image, mf_semantics, the cold-start baselines (DropoutNet,
AMF, AMR, CLCRec), CIERec(MF) and CIERec(VBPR) on the same data and budget (or
the rows named by --models), and writes table2.md / table2.csv: R@10 and
NDCG@10 for Cold / Warm / All, as mean ± std over seeds.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/table2', 'Root of the runs and tables.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Training seeds per model.')
_QUICK = flags.DEFINE_bool('quick', False, 'One seed, one epoch: a smoke run.')
_MODELS = flags.DEFINE_list('models', [], 'Row labels to run (default: every Table II row).')

COLUMNS = tuple((s, m) for s in ('cold', 'warm', 'all') for m in ('recall@10', 'ndcg@10'))
HEADER = ['model'] + [f"{s.capitalize()} {'R' if m.startswith('recall') else 'NDCG'}@10" for s, m in COLUMNS]


def main(_):
  seeds = 1 if _QUICK.value else _SEEDS.value
  models = paper_rows.select(_MODELS.value)
  runs = paper_rows.table2_runs(_CONFIG.value, seeds, models)
  results = grid.run_grid(_CONFIG.value, runs, _WORKDIR.value, quick=_QUICK.value)
  rows = []
  for label, _ in models:
    mine = [results[r] for r in runs if r.label == label]
    rows.append((label, [grid.mean_std([grid.metric(x, s, m) for x in mine]) for s, m in COLUMNS]))
  print(grid.write_table(rows, HEADER, os.path.join(_WORKDIR.value, 'table2')))


if __name__ == '__main__':
  app.run(main)
