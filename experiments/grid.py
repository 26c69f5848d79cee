"""Runs a grid of configurations through train_and_evaluate and tabulates them.

Each run has its own workdir; a run whose results.json exists is skipped, so
an interrupted grid resumes (a half-finished run resumes from its checkpoint).
Compiled steps are cached on disk across runs of the same shape.
"""

import csv
import dataclasses
import json
import os
import time

import jax
import numpy as np

from cierec_jax import report
from cierec_jax import train


@dataclasses.dataclass(frozen=True)
class Run:
  label: str  # the table row
  overrides: tuple  # ((dotted field, value), ...)
  seed: int

  def workdir(self, root: str) -> str:
    safe = ''.join(ch if ch.isalnum() else '_' for ch in self.label).strip('_')
    return os.path.join(root, safe, f'seed{self.seed}')


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
  jax.config.update('jax_compilation_cache_dir', os.path.join(root, '.jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def run_grid(config, runs, root: str, quick: bool = False) -> dict:
  """Trains every run (skipping finished ones); returns {run: results} and prints progress."""
  os.makedirs(root, exist_ok=True)
  enable_compilation_cache(root)
  start, results, timed = time.time(), {}, []
  for n, run in enumerate(runs, start=1):
    workdir = run.workdir(root)
    path = os.path.join(workdir, 'results.json')
    if os.path.exists(path):
      with open(path) as f:
        results[run] = json.load(f)
      print(f'[{n}/{len(runs)}] {run.label} seed {run.seed}: done before, skipped', flush=True)
      continue
    c = apply(config, run.overrides + (('train.seed', run.seed),))
    if quick:
      c.train.epochs = 1
    t0 = time.time()
    results[run] = train.train_and_evaluate(c, workdir)
    timed.append(time.time() - t0)
    left = len(runs) - n
    eta = report.format_duration(np.mean(timed) * left) if left else '0s'
    print(f'[{n}/{len(runs)}] {run.label} seed {run.seed}: {report.format_duration(timed[-1])}, '
          f'grid elapsed {report.format_duration(time.time() - start)}, ETA {eta}', flush=True)
  print(f'grid wall time: {report.format_duration(time.time() - start)} '
        f'({len(timed)} runs trained, {len(runs) - len(timed)} reused)', flush=True)
  return results


def mean_std(values) -> str:
  """Mean ± std over seeds; 'n/a' when a subset had no users (metric None)."""
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


def metric(results, subset: str, name: str, split: str = 'test') -> float:
  """A run's metric mean over the negative repeats; split: 'test',
  'test_withheld' (annotations withheld), 'valid', ..."""
  return results[split][subset][name]['mean']
