"""Each paper-experiment script end to end with --quick on a tiny synthetic config."""

import csv
import glob
import json
import os
import re
import subprocess
import sys
import types

import pytest

from cierec_jax.models import registry
from cierec_jax.models import resnet
from configs import allrecipes
from configs import cds
from configs import default
from configs import movielens
from experiments import paper_rows
from tests import tiny

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=configs/default.py', '--config.dataset.num_users=40', '--config.dataset.num_items=100',
        '--config.dataset.image_size=16', '--config.eval.num_negatives=30', '--config.eval.repeats=2',
        '--config.model.embed_dim=8', '--config.model.feature_dim=32', '--config.model.encoder_width=4',
        '--config.train.batch_size=128', '--config.eval.batch_size=20',
        '--config.model.encoder_init=',  # random init, unless a test passes the session's pretrained encoder
        f'--config.train.steps_per_call={tiny.END_TO_END_STEPS_PER_CALL}']


def _module(script, *args, env=None):
  """Runs `python -m experiments.<script> args` in the repository root."""
  return subprocess.run([sys.executable, '-m', f'experiments.{script}', *args], cwd=ROOT,
                        capture_output=True, text=True, env=env)


def _table_rows(stdout, *headers):
  """The cells of every markdown table row printed, but header rows (first cell
  starting with one of headers)."""
  rows = [[c.strip() for c in l.strip('|').split('|')] for l in stdout.splitlines() if l.startswith('| ')]
  return [r for r in rows if not r[0].startswith(headers)]


def _run(script, workdir, data_dir, *extra):
  out = _module(script, '--quick', f'--workdir={workdir}', *TINY,
                f'--config.dataset.data_dir={data_dir}', *extra)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def _csv(path):
  with open(path) as f:
    return list(csv.reader(f))


def _is_mean_std(cell):
  mean, std = cell.split(' ± ')
  return 0.0 <= float(mean) <= 1.0 and float(std) >= 0.0


TABLE2 = ['MF', 'VBPR', 'MF(Image)', 'MF(Semantics)', 'VECF', 'HAFR-non-i', 'PiNet', 'DropoutNet', 'AMF',
          'AMR', 'CLCRec', 'CIERec(MF)', 'CIERec(VBPR)']  # the paper's Table II, in its order
# The scripts' logic on two cheap rows, one that reads annotations (a withheld
# row); every model has its own one-epoch run in its model tests.
SOME = '--models=MF,MF(Semantics)'


def test_every_table2_row_has_a_learning_rate_on_every_dataset():
  assert [label for label, _ in paper_rows.MODELS] == TABLE2
  for dataset in (default, movielens, cds, allrecipes):
    assert len(paper_rows.table2_runs(dataset.get_config(), 1)) == len(TABLE2)


def _check_table2(root):
  rows = _csv(root / 'table2.csv')
  assert rows[0] == ['model', 'Cold R@10', 'Cold NDCG@10', 'Warm R@10', 'Warm NDCG@10', 'All R@10', 'All NDCG@10']
  w = ', annotations withheld'
  assert [r[0] for r in rows[1:]] == ['MF', 'MF(Semantics)', 'MF(Semantics)' + w]
  assert all(_is_mean_std(c) for r in rows[1:] for c in r[1:])
  items = _csv(root / 'table2_items.csv')
  assert items[0][1:5] == ['Cold item R@10', 'Cold item NDCG@10', 'Warm item R@10', 'Warm item NDCG@10']
  assert [r[0] for r in items] == [r[0] for r in rows]
  assert open(root / 'table2.md').read().startswith('| model | Cold R@10')


def test_table3_rows_are_every_ablation_for_every_backbone_and_build_their_models():
  """The rows --quick skips below (+TA, +GR) are CIERec with some flags off:
  each builds its model (the parameters its flags imply), for both backbones."""
  from tests import model_helpers  # pylint: disable=g-import-not-at-top
  labels = [label for label, _ in paper_rows.ROWS]
  assert labels == ['Base', 'Base+CI', 'Base+CI+TA', 'Base+CI+TA+GR', 'Base+CI+TA+GR+PI']
  runs = paper_rows.ablation_runs(default.get_config(), 1)
  assert [(b, label) for b, label, _ in runs] == [(b, label) for b in paper_rows.BACKBONES
                                                 for label in labels]
  for backbone, label, run in runs:
    model = {k.split('.')[1]: v for k, v in run.overrides if k.startswith('model.')}
    params = model_helpers.shapes(model_helpers.make(modality='features', **model), model_helpers.batch(
        modality='features'))['params']
    assert ('inference' in params) == ('CI' in label), (backbone, label)  # the content inference module
    assert ('policy' in params) == ('GR' in label), (backbone, label)


def test_table3_and_fig3_quick(tmp_path, pretrained_encoder):
  """The MF backbone's Base, Base+CI and full rows (the ones Fig. 3 reads; the
  others are the same script with other flags, checked above); Base and the
  full row are Table II's MF(Image) and CIERec(MF) runs, shared through the
  root. In the paper's setting: Base reads pre-extracted features, the CI rows
  train the pretrained ResNet18."""
  encoder = f'--config.model.encoder_init={pretrained_encoder}'
  bad = _module('table3', '--rows=Base,Base+TA')
  assert bad.returncode != 0 and '--rows=Base,Base+TA: expected some of Base,Base+CI,' in bad.stderr
  out = _run('table3', tmp_path / 'runs', tmp_path / 'data', '--backbones=mf', encoder,
             '--rows=Base,Base+CI,Base+CI+TA+GR+PI')
  assert '[3/3]' in out
  rows = _csv(tmp_path / 'runs' / 'table3.csv')
  assert [r[0] for r in rows[1:]] == ['Base', 'Base+CI', 'Base+CI+TA+GR+PI',
                                      'Base+CI+TA+GR+PI, annotations withheld']
  assert rows[0] == ['row', 'MF Cold R@10', 'MF Warm R@10', 'MF All R@10']
  assert all(_is_mean_std(c) for r in rows[1:] for c in r[1:])
  encoders = {label: json.load(open(path))['encoder']
              for label in ('MF_Image', 'CIERec_MF')
              for path in glob.glob(str(tmp_path / 'runs' / label / '**' / 'results.json'), recursive=True)}
  assert encoders == {'MF_Image': 'features', 'CIERec_MF': 'resnet18'}
  again = _run('table2', tmp_path / 'runs', tmp_path / 'data', '--models=MF(Image),CIERec(MF)', encoder)
  assert again.count('done before, skipped') == 2
  table2 = {r[0]: r for r in _csv(tmp_path / 'runs' / 'table2.csv')}
  assert [table2['MF(Image)'][c] for c in (1, 3, 5)] == rows[1][1:]  # Base is MF(Image)
  assert [table2['CIERec(MF)'][c] for c in (1, 3, 5)] == rows[3][1:]
  # fig3 in the same root reuses the table's Base, Base+CI and full CIERec(MF) runs.
  out = _run('fig3', tmp_path / 'runs', tmp_path / 'data', '--users=3', encoder)
  assert out.count('done before, skipped') == 3
  assert os.path.getsize(tmp_path / 'runs' / 'fig3.png') > 10_000


def test_tune_quick(tmp_path):
  out = _run('tune', tmp_path / 'runs', tmp_path / 'data', '--lrs=0.01,0.05', '--weight_l2s=0,0.1',
             SOME, '--max_extensions=1')
  rows = _csv(tmp_path / 'runs' / 'tune.csv')
  assert rows[0] == ['model', 'lr: valid R@10', 'lr chosen', 'lr grid edge',
                     'weight_l2: valid R@10', 'weight_l2 chosen', 'weight_l2 grid edge']
  assert [r[0] for r in rows[1:]] == ['MF', 'MF(Semantics)']
  parse = lambda cell: {float(k): float(v) for k, v in (kv.split(': ') for kv in cell.split(', '))}
  chosen_by_field = {}
  for column, field in ((1, 'lr'), (4, 'weight_l2')):
    line = [x for x in out.splitlines() if x.startswith(f'c.tuned_{field}.update(')][0]
    chosen = dict(kv.split('=') for kv in line[len(f'c.tuned_{field}.update(dict('):-2].split(', '))
    chosen_by_field[field] = chosen
    assert sorted(chosen) == ['mf', 'mf_semantics']
    for key, row in zip(['mf', 'mf_semantics'], rows[1:]):
      model, (cell, best, edge) = row[0], row[column:column + 3]
      tried = parse(cell)
      assert float(chosen[key]) == float(best) and tried[float(best)] == max(tried.values()), model
      if field == 'lr':
        assert len(tried) == 3, 'one extension past the edge where the best of 0.01, 0.05 sat'
        assert (edge == 'EDGE') == (float(best) in (min(tried), max(tried))), model
      else:  # 0 is no penalty: a natural end, not an edge
        assert (edge == 'EDGE') == (float(best) != 0 and float(best) in (min(tried), max(tried))), model
      assert (edge == 'EDGE') == (f'WARNING: {model}: the best {field}' in out)
  # Table II in the same root on the chosen values, pasted into the config (README's
  # workflow): every run is one of tune's, reused, not trained again.
  tuned = [f'--config.tuned_{field}.{key}={value}' for field, chosen in chosen_by_field.items()
           for key, value in chosen.items()]
  table2 = _run('table2', tmp_path / 'runs', tmp_path / 'data', SOME, *tuned)
  assert table2.count('done before, skipped') == 2 and 'grid wall time' in table2, table2
  _check_table2(tmp_path / 'runs')
  # MF has no kernels: the penalty changes nothing, and a tie picks no penalty.
  mf = parse(rows[1][4])
  assert sorted(mf) == [0.0, 0.1] and mf[0.0] == mf[0.1] and rows[1][5] == '0'
  # The penalised runs have their own workdirs next to the unpenalised ones.
  assert os.path.exists(tmp_path / 'runs' / 'MF' / f'lr{float(rows[1][2]):g}' / 'wl2_0.1' / 'seed0' / 'results.json')
  # A second call on a config that already holds tuned values (as after
  # pasting; a penalty of 0.1 so that it differs from the plain config) walks
  # the same grids: nothing to train, the same choices.
  pasted = [f'--config.tuned_lr.{key}={row[2]}' for key, row in zip(['mf', 'mf_semantics'], rows[1:])]
  pasted += ['--config.tuned_weight_l2.mf=0.1', '--config.tuned_weight_l2.mf_semantics=0.1']
  again = _run('tune', tmp_path / 'runs', tmp_path / 'data', '--lrs=0.01,0.05', '--weight_l2s=0,0.1',
               SOME, '--max_extensions=1', *pasted)
  assert all('(0 runs trained' in x for x in again.splitlines() if x.startswith('grid wall time')), again
  same = lambda text: [x for x in text.splitlines() if x.startswith('c.tuned_')]
  assert same(again) == same(out)


def test_tune_extends_a_grid_past_the_edge_its_best_sits_on():
  from experiments import ladders  # pylint: disable=g-import-not-at-top
  assert ladders.extend({0.01: 0.2, 0.02: 0.3, 0.05: 0.4}) == [0.1]
  assert ladders.extend({0.01: 0.5, 0.02: 0.3, 0.05: 0.4}) == [0.005]
  assert ladders.extend({0.01: 0.2, 0.02: 0.5, 0.05: 0.4}) == []
  assert ladders.extend({0.2: 0.2, 0.5: 0.4}) == []  # the ladder ends at the paper's 0.5
  assert ladders.at_edge({0.2: 0.2, 0.5: 0.4}) and not ladders.at_edge({0.01: 0.2, 0.02: 0.5, 0.05: 0.4})
  assert ladders.extend({0.01: 0.3, 0.02: 0.3}) == [0.005]  # a tie picks the smaller rate
  # The weight penalty: 0 (none) ends the ladder and is not an edge; a best at the top extends.
  w = ladders.WEIGHT_L2
  assert ladders.extend({0.0: 0.3, 0.01: 0.2}, w) == [] and not ladders.at_edge({0.0: 0.3, 0.01: 0.2}, (0.0,))
  assert ladders.extend({0.0: 0.1, 0.01: 0.2, 0.1: 0.3}, w) == [1.0]
  assert ladders.at_edge({0.0: 0.1, 0.01: 0.2, 0.1: 0.3}, (0.0,))


def test_runs_share_workdirs_by_label_rate_and_seed():
  """A tuning run at the chosen rate is Table II's seed-0 run; a two-stage row
  starts from its base row's run of the same seed at the base's tuned rate."""
  c = default.get_config()
  c.tuned_lr.update(dict(mf=0.02, amf=0.1))
  runs = {r.label: r for r in paper_rows.table2_runs(c, 2, ['MF', 'AMF']) if r.seed == 1}
  assert runs['MF'].workdir('R') == os.path.join('R', 'MF', 'lr0.02', 'seed1')
  assert runs['AMF'].init_from == runs['MF']
  assert ('train.init_from', os.path.join('R', 'MF', 'lr0.02', 'seed1')) in runs['AMF'].config_overrides('R')
  tuning = paper_rows.table2_run(c, 'MF', dict(paper_rows.MODELS)['MF'], 0, 0.02)
  assert tuning == paper_rows.table2_runs(c, 1, ['MF'])[0]
  assert paper_rows.STAGED == {'amf': 'MF', 'amr': 'VBPR', 'dropoutnet': 'MF'}


def test_a_diverged_run_is_a_result_not_the_end_of_the_grid(tmp_path, capsys):
  """A run that diverges is recorded (diverged.json) and skipped when the grid
  resumes; a run started from it is not run; tables say 'diverged'; tuning
  ranks it below every finished value."""
  import math  # pylint: disable=g-import-not-at-top
  from experiments import grid, ladders, paper_rows as rows_lib  # pylint: disable=g-import-not-at-top
  from tests import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.config(str(tmp_path / 'data'))
  c.train.epochs = 1
  mf = (('model.name', 'mf'), ('train.lr', 0.05))
  ok = grid.Run('MF', mf, 0)
  bad = grid.Run('MF', mf + (('train.max_loss', 1e-6),), 1)  # every loss is above this bound
  after = grid.Run('AMF', (('model.name', 'amf'), ('train.lr', 0.05)), 1, init_from=bad)
  root = str(tmp_path / 'runs')
  results = grid.run_grid(c, [ok, bad, after], root)
  assert 'train.max_loss=1e-06' in results[bad][grid.DIVERGED]
  assert os.path.exists(os.path.join(bad.workdir(root), 'diverged.json'))
  assert results[after] == {grid.DIVERGED: f'the run it starts from diverged ({bad.workdir(root)})'}
  assert not os.path.exists(after.workdir(root))
  assert 'valid' in results[ok]
  capsys.readouterr()
  again = grid.run_grid(c, [ok, bad], root)
  assert again[bad] == results[bad] and 'skipped (diverged)' in capsys.readouterr().out
  (label, cells), = rows_lib.table2_rows([ok, bad], {ok: results[ok], bad: results[bad]}, ('all',))
  assert label == 'MF' and cells == ['diverged (1 of 2 seeds)'] * 2
  assert _is_mean_std(rows_lib.table2_rows([ok], results, ('all',))[0][1][0])
  assert ladders.best({0.01: 0.1, 0.05: -math.inf}) == 0.01 and ladders.extend({0.01: 0.1, 0.05: -math.inf}) == [0.005]


def test_a_run_another_process_holds_is_taken_up_after_the_others(tmp_path, capsys, monkeypatch):
  """Two processes of one grid on one root share its work: the run whose lock
  is held is left to its holder, the rest are trained, and its result is read
  once the holder releases it (not trained a second time)."""
  import json  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from cierec_jax import train, workdir_lock  # pylint: disable=g-import-not-at-top
  from experiments import grid  # pylint: disable=g-import-not-at-top
  trained = []

  def fake_train(config, workdir):  # the real run_lock, no training
    with train.run_lock(workdir):
      trained.append(workdir)
      return {'seed': config.train.seed}

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  monkeypatch.setattr(workdir_lock, 'acquire', _fast_poll(workdir_lock.acquire))
  root = str(tmp_path / 'runs')
  held, other = grid.Run('MF', (('model.name', 'mf'),), 0), grid.Run('MF', (('model.name', 'mf'),), 1)
  entered, finish = threading.Event(), threading.Event()

  def holder():  # "another process": holds the run, then writes its result
    with workdir_lock.held(held.workdir(root), train.RUN_LOCK):
      entered.set()
      finish.wait(10)
      with open(os.path.join(held.workdir(root), 'results.json'), 'w') as f:
        json.dump({'by': 'the holder'}, f)

  t = threading.Thread(target=holder)
  t.start()
  entered.wait(10)
  threading.Timer(0.5, finish.set).start()
  results = grid.run_grid(default.get_config(), [held, other], root)
  t.join()
  out = capsys.readouterr()
  assert trained == [other.workdir(root)]
  assert results[held] == {'by': 'the holder'} and results[other] == {'seed': 1}
  assert 'taken up after the other runs' in out.out and '[1/2] MF seed 0: done before, skipped' in out.out
  assert '(1 runs trained, 1 reused)' in out.out


def _fast_poll(acquire):
  return lambda path, what, wait=False, poll_seconds=1.0: acquire(path, what, wait, 0.05)


def test_rate_cell_shows_one_run_or_the_median_and_range():
  from experiments import yardstick
  assert yardstick.rate_cell([906047.4]) == '906,047'
  assert yardstick.rate_cell([3.0, 1.0, 2.0, 10.0]) == '2 (1-10)'  # median of an even count
  assert yardstick.rate_cell([900000, 1200000, 700000]) == '900,000 (700,000-1,200,000)'
  assert yardstick.rate_cell([1.0, None]) == '-'


def test_a_grid_keeps_a_configured_compilation_cache(monkeypatch, tmp_path):
  """JAX_COMPILATION_CACHE_DIR (the tests' session cache) wins over <root>/.jax_cache."""
  from experiments import grid
  updates = {}

  class Config:
    jax_compilation_cache_dir = '/chosen/cache'

    def update(self, name, value):
      updates[name] = value
  monkeypatch.setattr(grid, 'jax', types.SimpleNamespace(config=Config()))
  grid.enable_compilation_cache(str(tmp_path))
  assert 'jax_compilation_cache_dir' not in updates
  Config.jax_compilation_cache_dir = None
  grid.enable_compilation_cache(str(tmp_path))
  assert updates['jax_compilation_cache_dir'] == str(tmp_path / '.jax_cache')


def test_alternating_medians_warms_up_rotates_the_order_and_times_each_call(monkeypatch):
  from experiments import yardstick
  clock, order = [0.0], []

  def call(name, seconds):
    def run():
      order.append(name)
      clock[0] += seconds
    return run

  monkeypatch.setattr(yardstick.time, 'perf_counter', lambda: clock[0])
  medians = yardstick.alternating_medians(
      {'a': call('a', 1.0), 'b': call('b', 2.0), 'c': call('c', 4.0)}, rounds=4)
  assert medians == {'a': 1.0, 'b': 2.0, 'c': 4.0}
  assert ''.join(order) == 'abc' + 'abc' + 'bca' + 'cab' + 'abc'


def test_bench_train_repeats_a_row_and_reports_the_median(tmp_path):
  tiny = [f'--set={a.removeprefix("--config.")}' for a in TINY[1:]]
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  out = _module('bench_train', '--only=^MF, default$', '--epochs=2', '--repeats=2',
                f'--data_dir={tmp_path}', *tiny, env=dict(os.environ, TMPDIR=str(scratch)))
  assert out.returncode == 0, out.stderr[-3000:]
  assert not list(scratch.iterdir())  # the runs' workdirs (checkpoints) are removed
  rows = [l for l in out.stdout.splitlines() if l.startswith('| MF, default |')]
  assert len(rows) == 1, out.stdout
  cells = [c.strip() for c in rows[0].strip('|').split('|')]
  assert re.fullmatch(r'[\d,]+ \([\d,]+-[\d,]+\)', cells[2]), cells  # median (min-max)
  median, lo, hi = (int(v.replace(',', '')) for v in re.findall(r'[\d,]+', cells[2]))
  assert lo <= median <= hi
  bad = _module('bench_train', '--repeats=0')
  assert bad.returncode != 0 and '--repeats=0: expected 1 or more' in bad.stderr + bad.stdout


def test_bench_sparse_update_forms_end_where_dense_ends():
  out = _module('bench_sparse_update', '--rounds=1', '--calls=1')
  assert out.returncode == 0, out.stderr[-3000:]
  rows = _table_rows(out.stdout, 'Adagrad')
  assert [r[0] for r in rows] == ['dense', 'dense, logging the gradient norm', 'rows in place',
                                  'rows, dense apply']
  assert all(float(r[2]) == 0.0 for r in rows), rows  # every form makes the same update
  assert all(float(r[1].replace(',', '')) > 0 for r in rows)


def test_bench_model_times_the_step_and_counts_every_models_parameters():
  # 16x16 at width 4: the step's programs compile in 9 and 13 s against 14 and 20 s at
  # the default config's 32x32 and width 16 (alone); the counts below are the default's.
  out = _module('bench_model', '--scales=default', '--conv_impls=auto', '--batch=2', '--repeats=1',
                '--image_size=16', '--width=4', '--steps_per_call=2')
  assert out.returncode == 0, out.stderr[-3000:]
  assert '| fwd+bwd s/step, 2 per call |' in out.stdout
  rows = _table_rows(out.stdout, 'setting', 'model.name')
  steps = [r for r in rows if len(r) == 9]
  c = default.get_config().model
  c.encoder_width, c.encoder_init = 4, ''
  from experiments import yardstick  # pylint: disable=g-import-not-at-top
  count, _ = yardstick.param_counts(registry.create(c, **yardstick.DIMS), yardstick.example_batch(16, 2))
  assert [r[:4] for r in steps] == [['custom (16x16, width 4)', 'auto', f'{count:,}', '2']]
  assert all(float(v.replace(',', '')) > 0 for v in steps[0][4:]), steps
  counts = {r[0]: r[1] for r in rows if len(r) == 3}
  assert counts['cierec'] == '1,634,589' and counts['mf'] == '130,001'  # README's table
  assert len(counts) == 12, counts
  bad = _module('bench_model', '--scales=huge')
  assert bad.returncode != 0 and '--scales=huge: expected default and/or paper' in bad.stderr


def test_bench_conv_times_every_layer_and_step_variant_with_forms_that_agree():
  # 16x16 at width 64: Winograd on 4x4 maps, im2col on the 1x1 and 2x2 ones, at a
  # fraction of 32x32's compile time (the narrow stem's and width 16's forms are
  # tests/test_conv_ops.py's); one step variant, as each is a CIERec compile (~20 s)
  out = _module('bench_conv', '--image_size=16', '--width=64', '--batch=2', '--rounds=1',
                '--steps=winograd without Winograd')
  assert out.returncode == 0, out.stderr[-3000:]
  rows = _table_rows(out.stdout, 'layer', 'CIERec')
  layers = [r for r in rows if len(r) == 7]
  assert [r[0] for r in layers] == [l[0] for l in resnet.conv_layers(16, 64)]
  assert [r[1] for r in layers][-2:] == ['1x1x256', '1x1x512']
  assert all(float(v) > 0 for r in layers for v in r[2:5]), layers
  assert all(float(v) < 1e-4 for r in layers for v in r[5:]), layers  # the same convolutions
  assert max(float(r[6]) for r in layers) > 0, layers  # Winograd rounds differently somewhere
  steps = {r[0]: float(r[1]) for r in rows if len(r) == 2}
  assert set(steps) == {'winograd without Winograd'}
  assert all(v > 0 for v in steps.values())
  unknown = _module('bench_conv', '--steps=fast')
  assert unknown.returncode != 0 and '--steps=fast: expected some of patches,winograd' in unknown.stderr
  bad = _module('bench_conv', '--parts=speed')
  assert bad.returncode != 0 and '--parts=speed: expected layers and/or step' in bad.stderr + bad.stdout
