"""Runs a grid of configurations through train_and_evaluate and tabulates them.

Each run has its own workdir, `<root>/<label>/lr<lr>[/wl2_<weight_l2>]/seed<seed>`
(the penalty level only when it is not 0), so the
scripts that share a root share runs (a tuning run at the chosen learning rate
is Table II's run of that seed). A run whose results.json exists is skipped, so
an interrupted grid resumes (a half-finished run resumes from its checkpoint).
A run that diverges (DivergenceError, e.g. a learning rate too high) is a
result, not the end of the grid: its workdir gets diverged.json, its result
is {'diverged': why}, tuning ranks it below every finished run, and tables
say "diverged" in its cells (delete diverged.json to run it again).
A run may start from another run's trained state (`init_from`), which is
trained first when it is not finished. Compiled steps are cached on disk
across runs of the same shape. Processes running the same grid on one root
share its work: a run another live process holds is left to it and taken up
after the others (its result read, or the run resumed if that process died).
"""

import csv
import dataclasses
import json
import os
import time

import jax
import numpy as np

from cierec_jax import divergence
from cierec_jax import report
from cierec_jax import train
from cierec_jax import workdir_lock

DIVERGED = 'diverged'  # the result key (and the workdir's <DIVERGED>.json) of a diverged run


@dataclasses.dataclass(frozen=True)
class Run:
  label: str  # the table row
  overrides: tuple  # ((dotted field, value), ...)
  seed: int
  init_from: 'Run | None' = None  # the run whose best state this one starts from

  def workdir(self, root: str) -> str:
    safe = ''.join(ch if ch.isalnum() else '_' for ch in self.label).strip('_')
    o = dict(self.overrides)
    lr, weight_l2 = o.get('train.lr'), o.get('train.weight_l2')
    return os.path.join(root, safe, *([f'lr{lr:g}'] if lr is not None else []),
                        *([f'wl2_{weight_l2:g}'] if weight_l2 else []), f'seed{self.seed}')

  def config_overrides(self, root: str) -> tuple:
    """The overrides, the seed and, with init_from, that run's workdir."""
    extra = (('train.init_from', self.init_from.workdir(root)),) if self.init_from else ()
    return self.overrides + (('train.seed', self.seed),) + extra


def apply(config, overrides):
  """A copy of config with dotted-field overrides applied (unknown fields are errors)."""
  c = config.copy_and_resolve_references()
  for field, value in overrides:
    *path, last = field.split('.')
    node = c
    for p in path:
      node = node[p]
    if last not in node:
      raise KeyError(f'{field}: no such config field')
    node[last] = value
  return c


def enable_compilation_cache(root: str):
  """The grid's runs share compiled programs in <root>/.jax_cache, unless a
  cache is configured already (JAX_COMPILATION_CACHE_DIR): that one is kept."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.join(root, '.jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def run_grid(config, runs, root: str, quick: bool = False) -> dict:
  """Trains every run (skipping finished ones); returns {run: results} and prints progress."""
  os.makedirs(root, exist_ok=True)
  enable_compilation_cache(root)
  start, results, timed = time.time(), {}, []
  bases = [r.init_from for r in runs if r.init_from and r.init_from not in runs]
  if bases:  # a run's starting state comes first
    results.update(run_grid(config, list(dict.fromkeys(bases)), root, quick))
  runs = sorted(runs, key=lambda r: r.init_from is not None)  # stable: bases before the runs they start
  pending = list(enumerate(runs, start=1))
  while pending:
    busy = []
    for n, run in pending:
      t0 = time.time()
      trained = _run_one(config, run, root, quick, results, f'[{n}/{len(runs)}] {run.label} seed {run.seed}')
      if trained is None:
        busy.append((n, run))
        continue
      if trained:
        timed.append(time.time() - t0)
        left = sum(1 for m, _ in pending if m > n) + len(busy)
        eta = report.format_duration(np.mean(timed) * left) if left else '0s'
        lost = f'DIVERGED: {results[run][DIVERGED]}; ' if diverged(results[run]) else ''
        print(f'[{n}/{len(runs)}] {run.label} seed {run.seed}: {lost}{report.format_duration(timed[-1])}, '
              f'grid elapsed {report.format_duration(time.time() - start)}, ETA {eta}', flush=True)
    for _, run in busy:  # wait for the other process, then read its result (or resume its run)
      lock = os.path.join(run.workdir(root), train.RUN_LOCK)
      workdir_lock.acquire(lock, f'workdir {run.workdir(root)}', wait=True)
      workdir_lock.release(lock)
    pending = busy
  print(f'grid wall time: {report.format_duration(time.time() - start)} '
        f'({len(timed)} runs trained, {len(runs) - len(timed)} reused)', flush=True)
  return results


def _run_one(config, run: Run, root: str, quick: bool, results: dict, name: str):
  """Fills results[run]: read when finished, else trained. Returns whether it
  trained, or None when another process holds the run (it is taken up after
  the others)."""
  workdir = run.workdir(root)
  done = [p for p in (os.path.join(workdir, f) for f in ('results.json', f'{DIVERGED}.json')) if os.path.exists(p)]
  if done:
    with open(done[0]) as f:
      results[run] = json.load(f)
    print(f'{name}: done before, skipped{" (diverged)" if diverged(results[run]) else ""}', flush=True)
    return False
  if run.init_from is not None and diverged(results[run.init_from]):
    results[run] = {DIVERGED: f'the run it starts from diverged ({run.init_from.workdir(root)})'}
    print(f'{name}: not run, {results[run][DIVERGED]}', flush=True)
    return False
  c = apply(config, run.config_overrides(root))
  if quick:
    c.train.epochs = 1
  try:
    results[run] = train.train_and_evaluate(c, workdir)
  except workdir_lock.WorkdirBusy as e:
    print(f'{name}: {e}; taken up after the other runs', flush=True)
    return None
  except divergence.DivergenceError as e:
    results[run] = {DIVERGED: str(e)}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f'{DIVERGED}.json'), 'w') as f:
      json.dump(results[run], f)
  return True


def diverged(results: dict) -> bool:
  return DIVERGED in results


def mean_std(values) -> str:
  """Mean ± std over seeds; 'n/a' when a subset had no users (metric None);
  'diverged (k of n seeds)' when some runs diverged (metric DIVERGED)."""
  lost = sum(isinstance(v, str) and v == DIVERGED for v in values)
  if lost:
    return f'diverged ({lost} of {len(values)} seeds)'
  if any(v is None for v in values):
    return 'n/a'
  return f'{np.mean(values):.4f} ± {np.std(values):.4f}'


def write_table(rows, header, path_stem: str):
  """rows: [(label, [cell strings])] -> <stem>.md and <stem>.csv; returns the markdown."""
  md = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  md += ['| ' + ' | '.join([label] + cells) + ' |' for label, cells in rows]
  text = '\n'.join(md) + '\n'
  with open(path_stem + '.md', 'w') as f:
    f.write(text)
  with open(path_stem + '.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    for label, cells in rows:
      w.writerow([label] + cells)
  return text


def metric(results, subset: str, name: str, split: str = 'test'):
  """A run's metric mean over the negative repeats (DIVERGED for a diverged
  run); split: 'test', 'test_withheld' (annotations withheld), 'valid', ..."""
  if diverged(results):
    return DIVERGED
  return results[split][subset][name]['mean']


def has_split(results_of_runs, split: str) -> bool:
  """Whether a table row for `split` exists for these runs: 'test' always;
  another split (e.g. 'test_withheld') when every run that did not diverge
  has it, and one did not."""
  finished = [r for r in results_of_runs if not diverged(r)]
  return split == 'test' or (bool(finished) and all(split in r for r in finished))
