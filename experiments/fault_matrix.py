"""Every fault and bad input we know of, tried the way a user meets it.

  python -m experiments.fault_matrix [--fast]

Each probe builds its input in a fresh folder (raw files from
tests/raw_fixtures.py, the tiny synthetic config of tests/tiny.py), calls what
a run calls (train_and_evaluate, load.prepare), and the table shows the
outcome and the one-line message the command line would print.
`tests/test_fault_matrix.py` runs the same probes and checks each expectation.
"""

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np

from cierec_jax import checkpoint as ckpt_lib
from cierec_jax import cli
from cierec_jax import train
from cierec_jax.config_checks import ConfigError
from cierec_jax.data import amazon_cds
from cierec_jax.data import builder
from cierec_jax.data import load
from cierec_jax.data.errors import DataError
from cierec_jax.divergence import DivergenceError
from cierec_jax.workdir_lock import WorkdirBusy
from configs import allrecipes as allrecipes_config
from configs import cds as cds_config
from tests import raw_fixtures as fx
from tests import tiny

_FAST = flags.DEFINE_bool('fast', False, 'Skip the probes that train a model.')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Probe:
  """name: the input, as the table shows it. run(folder) does it in an empty
  folder and returns a note on what happened when nothing was refused.
  error: the refusal expected (None: the probe must finish), and message: a
  regex the error's message (or the note) must match."""
  name: str
  run: Callable[[str], str]
  error: type | None
  message: str
  trains: bool = False


def _tiny(folder, **overrides):
  c = tiny.config(os.path.join(folder, 'data'))
  c.model.name = 'mf'
  c.train.epochs = 1
  c.train.log_every_steps = 1
  for field, value in overrides.items():
    section, name = field.split('.')
    c[section][name] = value
  return c


def _train(**overrides):
  def run(folder):
    results = train.train_and_evaluate(_tiny(folder, **overrides), os.path.join(folder, 'run'))
    return f'finished {results["steps"]} steps, test R@10 {results["test"]["all"]["recall@10"]["mean"]:.3f}'
  return run


# ---------------------------------------------------------------- raw inputs
def _cds(folder, variant='images', fractions=(0.5, 0.25), **files):
  c = cds_config.get_config()
  c.dataset.data_dir = os.path.join(folder, 'data')
  c.dataset.manual_dir = fx.write_amazon(os.path.join(folder, 'raw'), variant=variant, **files)
  c.dataset.variant = variant
  c.dataset.image_size = 16
  c.dataset.train_fraction, c.dataset.valid_fraction = fractions
  c.eval.num_negatives, c.eval.repeats = 1, 1
  return c


def _recipes(folder, recipes=None, ratings=None):
  c = allrecipes_config.get_config()
  c.dataset.data_dir = os.path.join(folder, 'data')
  c.dataset.manual_dir = fx.write_allrecipes(os.path.join(folder, 'raw'), recipes, ratings)
  c.dataset.image_size = 16
  c.eval.num_negatives, c.eval.repeats = 1, 1
  return c


def _ratings(split, rows):
  out = {k: [fx.RATING_HEADER] + v for k, v in fx.RATINGS.items()}
  out[split] = [fx.RATING_HEADER] + rows
  return out


def _prepare(make_config):
  def run(folder):
    load.prepare(make_config(folder))
    return 'prepared'
  return run


def _empty_reviews(folder):
  c = _cds(folder)
  open(os.path.join(c.dataset.manual_dir, amazon_cds.REVIEWS), 'wb').close()
  return c


def _features_of_width(width):
  rec = np.dtype([('asin', 'S10'), ('features', '<f4', (width,))])
  table = np.zeros(3, rec)
  table['asin'] = [a.encode() for a in fx.AMAZON_ITEMS[:3]]
  return table.tobytes()


def _recipe_cut_in_quotes():
  whole = '\n'.join([fx.RECIPE_HEADER] + fx.RECIPES)
  return whole[:whole.index('{\'directions')].split('\n')  # inside line 2's quoted field


def _empty_user():
  return fx.RATINGS['train'][:1] + [',102,4,2010-01-01T00:00:00'] + fx.RATINGS['train'][2:]


# ---------------------------------------------------------------- workdirs
@contextlib.contextmanager
def lock_held_elsewhere(workdir):
  """Another live process holding workdir's run lock."""
  code = ('import sys, time; from cierec_jax import workdir_lock; '
          'workdir_lock.acquire(sys.argv[1], "x"); print("held", flush=True); time.sleep(600)')
  os.makedirs(workdir, exist_ok=True)
  proc = subprocess.Popen([sys.executable, '-c', code, os.path.join(workdir, 'run.lock')],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'held'
    yield proc.pid
  finally:
    proc.kill()
    proc.wait()


def _busy_workdir(folder):
  with lock_held_elsewhere(os.path.join(folder, 'run')):
    try:
      _train()(folder)
    finally:
      assert not os.path.exists(os.path.join(folder, 'data')), 'refused only after preparing data'
  return 'trained'


def dead_pid() -> int:
  """The pid of a process of this host that has ended."""
  out = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                       capture_output=True, text=True, check=True)
  return int(out.stdout)


def _leftovers(folder):
  """A killed run and a killed preparation left: a lock naming a dead pid, a
  half-written checkpoint, metrics lines of steps never checkpointed, and a
  TFDS incomplete.* table folder."""
  c = _tiny(folder)
  run = os.path.join(folder, 'run')
  os.makedirs(os.path.join(run, 'checkpoints', '3.orbax-checkpoint-tmp'))
  with open(os.path.join(run, 'run.lock'), 'w') as f:
    json.dump({'pid': dead_pid(), 'host': socket.gethostname(), 'started': time.time()}, f)
  with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps({'kind': 'train', 'step': s, 'loss': 9.0}) + '\n' for s in range(1, 7))
  cls = load.builders()['synthetic']
  fp = builder.fingerprint(load.content_settings(c))
  table = builder.table_dir(c.dataset.data_dir, cls.name, builder.ITEMS, fp)
  incomplete = os.path.join(os.path.dirname(table), f'incomplete.ABC123_{builder.VERSION}')
  os.makedirs(incomplete)
  c.train.halt_after_steps = 1  # all of it is dealt with before the first step
  halted = train.train_and_evaluate(c, run)
  with open(os.path.join(run, 'metrics.jsonl')) as f:
    train_lines = [r for r in map(json.loads, f) if r['kind'] == 'train']
  removed = not any(map(os.path.exists, (incomplete, os.path.join(run, 'checkpoints', '3.orbax-checkpoint-tmp'))))
  old = sum(r['loss'] == 9.0 for r in train_lines)
  return (f'ran to step {halted["halted_at_step"]} despite the stale lock; unfinished checkpoint '
          f'and incomplete table removed: {removed}; metrics lines of the killed run kept: {old}')


# ---------------------------------------------------------------- divergence
def _poisoned_then_resumed(folder):
  """Two good steps, then lr=1e30 with a checkpoint every step, then a sane
  rerun that must get past the step that failed (to step 5, checkpointed)."""
  run = os.path.join(folder, 'run')
  train.train_and_evaluate(_tiny(folder, **{'train.halt_after_steps': 2}), run)
  try:
    train.train_and_evaluate(_tiny(folder, **{'train.lr': 1e30, 'train.checkpoint_every_steps': 1}), run)
    refused = 'not refused'
  except DivergenceError as e:
    refused = f'DivergenceError: {e}'
  mgr = ckpt_lib.Checkpointer(run)
  latest = mgr.latest_step()
  mgr.close()
  halted = train.train_and_evaluate(_tiny(folder, **{'train.halt_after_steps': 5}), run)
  return (f'{refused} | latest checkpoint: {latest} | rerun with train.lr=0.05: resumed, '
          f'checkpointed step {halted["halted_at_step"]}')


PROBES = (
    Probe('train.lr=-1', _train(**{'train.lr': -1.0}), ConfigError, r'train\.lr=-1\.0 \(expected a finite number > 0\)'),
    Probe('train.batch_size=0', _train(**{'train.batch_size': 0}), ConfigError, r'train\.batch_size=0 \(expected an integer >= 1\)'),
    Probe('train.batch_size=-256', _train(**{'train.batch_size': -256}), ConfigError, r'train\.batch_size=-256 '),
    Probe('train.epochs=0', _train(**{'train.epochs': 0}), ConfigError, r'train\.epochs=0 \(expected an integer >= 1\)'),
    Probe('model.gate_activation=foo', _train(**{'model.gate_activation': 'foo'}), ConfigError,
          r"model\.gate_activation='foo' \(expected one of \('sigmoid', 'identity'\)\)"),
    Probe('dataset.train_fraction=0.8, dataset.valid_fraction=0.2',
          _train(**{'dataset.train_fraction': 0.8, 'dataset.valid_fraction': 0.2}), ConfigError,
          r'train_fraction \+ dataset\.valid_fraction = 1 \(expected < 1'),
    Probe('train.lr=-1 and train.epochs=0 and eval.ks=(0,)',
          _train(**{'train.lr': -1.0, 'train.epochs': 0, 'eval.ks': (0,)}), ConfigError,
          r'3 problems.*train\.epochs=0.*train\.lr=-1\.0.*eval\.ks=\(0,\)'),
    Probe('0-byte image_features_CDs_and_Vinyl.b',
          _prepare(lambda d: _cds(d, 'features', features_bytes=b'')), DataError,
          r'image_features_CDs_and_Vinyl\.b: empty file \(0 bytes\)'),
    Probe('feature file of 2048-d records', _prepare(lambda d: _cds(d, 'features', features_bytes=_features_of_width(2048))),
          DataError, r'\.b: record 1 holds 2048 float32 features \(record 2 starts at byte 8202\); expected 4096'),
    Probe('0-byte reviews_CDs_and_Vinyl_5.json.gz', _prepare(_empty_reviews), DataError,
          r'reviews_CDs_and_Vinyl_5\.json\.gz: empty file \(0 bytes\)'),
    Probe('empty reviewerID', _prepare(lambda d: _cds(d, reviews_lines=[
        '{"reviewerID": "", "asin": "B000000001", "unixReviewTime": 5}'])), DataError,
          r'reviews_CDs_and_Vinyl_5\.json\.gz:1: empty reviewerID'),
    Probe('Amazon fixture, default split fractions (no user has a valid interaction)',
          _prepare(lambda d: _cds(d, fractions=(0.6, 0.1))), DataError,
          r'the valid split is empty after preparation \(with dataset\.train_fraction=0\.6'),
    Probe('Allrecipes recipe CSV cut inside a quoted field', _prepare(lambda d: _recipes(d, recipes=_recipe_cut_in_quotes())),
          DataError, r'core-data_recipe\.csv:2: malformed CSV: unexpected end of data \(a quoted field is never closed'),
    Probe('Allrecipes rating with an empty user_id', _prepare(lambda d: _recipes(d, ratings=_ratings('train', _empty_user()))),
          DataError, r'core-data-train_rating\.csv:3: empty user_id'),
    Probe('Allrecipes valid split file with only its header', _prepare(lambda d: _recipes(d, ratings=_ratings('valid', []))),
          DataError, r'core-data-valid_rating\.csv: no rows after the header'),
    Probe('Allrecipes valid split whose recipes all lack an image',
          _prepare(lambda d: _recipes(d, ratings=_ratings('valid', ['1,104,4,2010-05-01T00:00:00']))),
          DataError, r"the valid split is empty after preparation \(with the source's split labels"),
    Probe('second run on a busy workdir', _busy_workdir, WorkdirBusy,
          r'workdir .*/run is in use by pid \d+ on host .* since'),
    Probe('workdir and data dir left by killed processes', _leftovers, None,
          r'ran to step 1 .*stale lock; .*removed: True; metrics lines of the killed run kept: 0', trains=True),
    Probe('train.lr=1e6', _train(**{'train.lr': 1e6}), DivergenceError,
          r'loss \S+ at step \d+ is above the bound .* = 1000 x the initial loss', trains=True),
    Probe('train.lr=1e30 with train.checkpoint_every_steps=1 after 2 good steps, then a rerun with '
          'train.lr=0.05', _poisoned_then_resumed, None,
          r'DivergenceError: (non-finite probe-batch loss of the state|probe-batch loss of the state \S+) '
          r'at step 3.*not saved, the last checkpoint \(step 2\) is kept.* \| latest checkpoint: 2 \| '
          r'rerun .*resumed, checkpointed step 5', trains=True),
)


def outcome(probe: Probe, folder: str) -> tuple[str, str]:
  """(outcome, message): the user error's class name and message, or 'finished' and the note."""
  try:
    return 'finished', probe.run(folder)
  except cli.USER_ERRORS as e:
    return type(e).__name__, ' '.join(str(e).split('\n'))


def as_expected(probe: Probe, result: tuple[str, str]) -> bool:
  expected = probe.error.__name__ if probe.error else 'finished'
  return result[0] == expected and re.search(probe.message, result[1]) is not None


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  rows, failed = [], 0
  for probe in PROBES:
    if probe.trains and _FAST.value:
      continue
    with tempfile.TemporaryDirectory() as folder:
      result = outcome(probe, folder)
    ok = as_expected(probe, result)
    failed += not ok
    message = result[1].replace(folder, '<tmp>').replace('|', '/')
    rows.append(f'| {probe.name} | {result[0]}{"" if ok else " (UNEXPECTED)"} | {message} |')
  print('| input | outcome | message |\n|---|---|---|\n' + '\n'.join(rows))
  if failed:
    sys.exit(f'{failed} probe(s) did not behave as expected')


if __name__ == '__main__':
  app.run(main)
