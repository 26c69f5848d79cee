"""Each paper-experiment script end to end with --quick on a tiny synthetic config."""

import csv
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=configs/default.py', '--config.dataset.num_users=40', '--config.dataset.num_items=100',
        '--config.dataset.image_size=16', '--config.eval.num_negatives=30', '--config.eval.repeats=2',
        '--config.model.embed_dim=8', '--config.model.feature_dim=16', '--config.model.encoder_width=4',
        '--config.train.batch_size=128', '--config.eval.batch_size=20',
        '--config.model.encoder_init=']  # random init: no pretraining in these smoke runs


def _run(script, workdir, data_dir, *extra):
  args = [sys.executable, '-m', f'experiments.{script}', '--quick', f'--workdir={workdir}',
          *TINY, f'--config.dataset.data_dir={data_dir}', *extra]
  out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def _csv(path):
  with open(path) as f:
    return list(csv.reader(f))


def _is_mean_std(cell):
  mean, std = cell.split(' ± ')
  return 0.0 <= float(mean) <= 1.0 and float(std) >= 0.0


def test_table2_quick(tmp_path):
  out = _run('table2', tmp_path / 'runs', tmp_path / 'data')
  rows = _csv(tmp_path / 'runs' / 'table2.csv')
  assert rows[0] == ['model', 'Cold R@10', 'Cold NDCG@10', 'Warm R@10', 'Warm NDCG@10', 'All R@10', 'All NDCG@10']
  assert [r[0] for r in rows[1:]] == ['MF', 'VBPR', 'MF(Image)', 'MF(Semantics)', 'CIERec(MF)', 'CIERec(VBPR)']
  assert all(_is_mean_std(c) for r in rows[1:] for c in r[1:])
  assert 'grid wall time' in out and '[6/6]' in out
  # A second call reuses every finished run.
  again = _run('table2', tmp_path / 'runs', tmp_path / 'data')
  assert again.count('done before, skipped') == 6
  assert open(tmp_path / 'runs' / 'table2.md').read().startswith('| model | Cold R@10')


def test_table3_and_fig3_quick(tmp_path):
  _run('table3', tmp_path / 'runs', tmp_path / 'data')
  rows = _csv(tmp_path / 'runs' / 'table3.csv')
  assert [r[0] for r in rows[1:]] == ['Base', 'Base+CI', 'Base+CI+TA', 'Base+CI+TA+GR', 'Base+CI+TA+GR+PI']
  assert len(rows[0]) == 7 and rows[0][1] == 'MF Cold R@10' and rows[0][4] == 'VBPR Cold R@10'
  assert all(_is_mean_std(c) for r in rows[1:] for c in r[1:])
  # fig3 in the same root reuses the table's Base, Base+CI and full CIERec(MF) runs.
  out = _run('fig3', tmp_path / 'runs', tmp_path / 'data', '--users=3')
  assert out.count('done before, skipped') == 3
  assert os.path.getsize(tmp_path / 'runs' / 'fig3.png') > 10_000


def test_tune_quick(tmp_path):
  out = _run('tune', tmp_path / 'runs', tmp_path / 'data', '--lrs=0.01,0.05')
  rows = _csv(tmp_path / 'runs' / 'tune.csv')
  assert rows[0] == ['model', 'lr=0.01 valid R@10', 'lr=0.05 valid R@10']
  assert [r[0] for r in rows[1:]] == ['MF', 'VBPR', 'MF(Image)', 'MF(Semantics)', 'CIERec(MF)', 'CIERec(VBPR)',
                                      'mean rank']
  line = [x for x in out.splitlines() if x.startswith('c.tuned_lr.update(')][0]
  chosen = dict(kv.split('=') for kv in line[len('c.tuned_lr.update(dict('):-2].split(', '))
  assert sorted(chosen) == ['cierec_mf', 'cierec_vbpr', 'mf', 'mf_image', 'mf_semantics', 'vbpr']
  for key, (model, *values) in zip(['mf', 'vbpr', 'mf_image', 'mf_semantics', 'cierec_mf', 'cierec_vbpr'], rows[1:]):
    low, high = float(values[0]), float(values[1])
    if low != high:  # the csv rounds to 4 decimals; a tie there says nothing
      assert float(chosen[key]) == (0.01 if low > high else 0.05), model
