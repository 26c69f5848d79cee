"""The paper's Table III: the ablation rows for both backbones (Recall@10).

  python -m experiments.table3 --config=configs/default.py --seeds=3 --workdir=runs/paper

Base (CI, TA, GR, PI off: MF(Image) / VBPR), +CI, +CI+TA, +CI+TA+GR and
+CI+TA+GR+PI (CIERec), each for the MF and VBPR backbones, on the paper's
user partition; the full rows also with annotations withheld at test. Writes
table3.md / table3.csv. Sharing --workdir with table2 reuses its Base and
CIERec runs. --rows runs some of the rows (their labels), for instance to add
one to a root that holds the others.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/paper', 'Root of the runs and tables.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Training seeds per row.')
_BACKBONES = flags.DEFINE_list('backbones', list(paper_rows.BACKBONES), 'Backbones to run.')
_ROWS = flags.DEFINE_list('rows', [label for label, _ in paper_rows.ROWS], 'Rows to run (their labels).')
_QUICK = flags.DEFINE_bool('quick', False, 'One seed, one epoch: a smoke run.')
SUBSETS = ('cold', 'warm', 'all')


def main(_):
  seeds = 1 if _QUICK.value else _SEEDS.value
  backbones = tuple(_BACKBONES.value)
  if set(backbones) - set(paper_rows.BACKBONES):
    raise app.UsageError(f'--backbones={_BACKBONES.value}: expected some of {paper_rows.BACKBONES}')
  labels = [label for label, _ in paper_rows.ROWS]
  if not _ROWS.value or set(_ROWS.value) - set(labels):
    raise app.UsageError(f'--rows={",".join(_ROWS.value)}: expected some of {",".join(labels)}')
  rows = [(label, flags_) for label, flags_ in paper_rows.ROWS if label in _ROWS.value]
  entries = paper_rows.ablation_runs(_CONFIG.value, seeds, backbones, rows)
  results = grid.run_grid(_CONFIG.value, [run for *_, run in entries], _WORKDIR.value, quick=_QUICK.value)
  header = ['row'] + [f'{b.upper()} {s.capitalize()} R@10' for b in backbones for s in SUBSETS]
  table = []
  for label, _ in rows:
    for split, suffix in (('test', ''), ('test_withheld', paper_rows.WITHHELD)):
      mine = {b: [results[run] for bb, lab, run in entries if (bb, lab) == (b, label)]
              for b in backbones}
      if not grid.has_split([x for runs in mine.values() for x in runs], split):
        continue
      table.append((label + suffix, [grid.mean_std([grid.metric(x, s, 'recall@10', split) for x in mine[b]])
                                     for b in backbones for s in SUBSETS]))
  print(grid.write_table(table, header, os.path.join(_WORKDIR.value, 'table3')))


if __name__ == '__main__':
  app.run(main)
