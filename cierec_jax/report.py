"""What a run shows and writes: progress lines, the Table II row, metrics.jsonl, curves.png."""

import json
import os

import jax

SUBSET_TITLES = (('cold', 'Cold'), ('warm', 'Warm'), ('all', 'All'))


def format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else (f'{m}m{s:02d}s' if m else f'{s}s')


def progress_line(epoch, epochs, step, steps, loss, examples_per_second, eta_seconds) -> str:
  """examples_per_second None: nothing timed yet (only compiling calls so far)."""
  speed = ('(speed and ETA after the first timed call)' if examples_per_second is None else
           f'{examples_per_second:,.0f} ex/s ETA {format_duration(eta_seconds)}')
  return f'epoch {epoch + 1}/{epochs} step {step}/{steps} loss {loss:.4f} {speed}'


def table_row(name: str, test: dict, k: int = 10) -> str:
  """One row of the paper's Table II: R@K and NDCG@K for Cold, Warm, All."""
  cells = []
  for subset, _ in SUBSET_TITLES:
    for metric in ('recall', 'ndcg'):
      v = test[subset][f'{metric}@{k}']
      cells.append('n/a (no users)' if v['mean'] is None else f"{v['mean']:.4f} ± {v['std']:.4f}")
  return f'| {name} | ' + ' | '.join(cells) + ' |'


def table(rows, k: int = 10) -> str:
  """rows: [(name, test metrics)] -> the paper's Table II layout, one row each."""
  head = '| model | ' + ' | '.join(f'{t} R@{k} | {t} NDCG@{k}' for _, t in SUBSET_TITLES) + ' |'
  sep = '|' + '---|' * 7
  return '\n'.join([head, sep] + [table_row(name, test, k) for name, test in rows])


class MetricsLog:
  """metrics.jsonl: one JSON object per logged step or evaluation."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._file = None  # kept open for appending: a step-logging run writes many lines a second

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None

  def truncate_after(self, step: int):
    """Drops lines past `step` (written by a run that stopped after its last
    checkpoint) and the final evaluations (written again when the run ends)."""
    self.close()
    if not os.path.exists(self.path):
      return
    keep = [line for line in self.read() if line['step'] <= step and line['kind'] in ('train', 'valid')]
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(x) + '\n' for x in keep)
    os.replace(tmp, self.path)

  def write(self, record: dict):
    if self._file is None:
      self._file = open(self.path, 'a')  # pylint: disable=consider-using-with
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()  # on disk for a reader, and if the run is killed

  def read(self) -> list:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]


def say(line: str):
  """Prints on process 0 only: every process of a multi-process run runs the same code."""
  if jax.process_index() == 0:
    print(line, flush=True)


class RunOutputs:
  """A run's files and printed lines, written by one process only.

  Every process of a multi-process run computes the same metrics; only the
  writer (process 0) touches the workdir's config.json, metrics.jsonl,
  results.json and curves.png, or prints, so each exists once.
  """

  def __init__(self, workdir: str, writer: bool = True):
    self.workdir = workdir
    self.writer = writer
    self.metrics = MetricsLog(workdir)

  def log(self, record: dict):
    if self.writer:
      self.metrics.write(record)

  def truncate_after(self, step: int):
    if self.writer:
      self.metrics.truncate_after(step)

  def json(self, name: str, obj):
    if self.writer:
      write_json(os.path.join(self.workdir, name), obj)

  def close(self):
    self.metrics.close()

  def curves(self):
    if self.writer:
      plot_curves(self.metrics.read(), os.path.join(self.workdir, 'curves.png'))

  def say(self, line: str):
    if self.writer:
      print(line, flush=True)


def write_json(path: str, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def plot_curves(records: list, path: str, metric: str = 'recall@10'):
  """Training loss and valid Recall@10 (all) against epoch."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  train = [r for r in records if r['kind'] == 'train']
  valid = [r for r in records if r['kind'] == 'valid']
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
  ax[0].plot([r['epoch_float'] for r in train], [r['loss'] for r in train])
  ax[0].set(xlabel='epoch', ylabel='training loss', title='loss')
  ax[1].plot([r['epoch'] for r in valid], [r['all'][metric]['mean'] for r in valid], marker='o')
  ax[1].set(xlabel='epoch', ylabel=f'valid {metric} (all)', title=f'valid {metric}')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
