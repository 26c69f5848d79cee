"""The training loop: state, epochs, checkpoints, periodic evaluation, final report."""

import contextlib
import functools
import itertools
import json
import os
import queue
import threading
import time

from absl import logging
import jax
import numpy as np

from cierec_jax import checkpoint as ckpt_lib
from cierec_jax import config_checks
from cierec_jax import divergence
from cierec_jax import evaluate as eval_lib
from cierec_jax import features as features_lib
from cierec_jax import host_memory
from cierec_jax import optim
from cierec_jax import parallel
from cierec_jax import pretrain
from cierec_jax import report
from cierec_jax import stages
from cierec_jax import train_step as step_lib
from cierec_jax import workdir_lock
from cierec_jax.data import builder
from cierec_jax.data import load
from cierec_jax.data import sampler as sampler_lib
from cierec_jax.models import encoder_weights
from cierec_jax.models import registry


def prefetch(iterator, size: int = 2):
  """Builds host batches in a background thread while the device computes."""
  q = queue.Queue(maxsize=size)
  done = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
      q.put(done)
    except BaseException as e:  # re-raised in the consumer  # pylint: disable=broad-except
      q.put(e)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item


def device_items(runner, data, train_config):
  """The items' tables, placed on the devices once when they fit in
  train.device_items_max_mb; None: each call's batches carry their items' inputs."""
  tables = sampler_lib.device_item_tables(data, float(train_config.device_items_max_mb) * 2**20)
  return None if tables is None else runner.put_items(tables)


def host_item_inputs(calls, data, items):
  """Calls of (first step, batches), with the items' inputs gathered on the host
  when `items` (device_items) is None."""
  if items is not None:
    return calls
  return ((i, sampler_lib.with_item_inputs(b, data, raw=True)) for i, b in calls)


def build_model(config, data, axis_name=None):
  return registry.create(config.model, num_users=data.num_users, num_items=data.num_items,
                         num_elements=data.num_elements, modality=data.modality,
                         has_annotations=data.has_annotations, axis_name=axis_name)


def init_encoder(state, tx, config, model):
  """The state with its ResNet18 encoder (the `encoder` params subtree and its
  BatchNorm statistics) read from model.encoder_init; unchanged without one."""
  if model.spec.encoder != 'resnet18' or not config.model.encoder_init:
    return state
  if 'encoder' not in state.params:
    raise ValueError(f'model.encoder_init: model.name={config.model.name!r} has no encoder '
                     'params subtree to load into')
  weights = pretrain.encoder_file(config)
  loaded = encoder_weights.load(weights, {'params': state.params['encoder'],
                                          'batch_stats': state.batch_stats['encoder']})
  params = {**state.params, 'encoder': loaded['params']}
  report.say(f'encoder: ResNet18 starts from {weights}')
  batch_stats = {**state.batch_stats, 'encoder': loaded['batch_stats']}
  return state.replace(params=params, batch_stats=batch_stats, opt_state=tx.init(params))


def device_info(mode: str, count: int) -> dict:
  info = {'kind': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform,
          'count': count, 'process_count': jax.process_count(), 'parallel': mode}
  if info['platform'] == 'cpu':  # XLA's scratch memory is host memory (host_memory.py)
    info['huge_pages'] = host_memory.huge_pages()
  return info


# Metrics a train record shows at its last step rather than averaged: the
# gates' choices, and the gradient norm (measured at that step only).
LAST_STEP_METRICS = ('action', 'lambda', 'grad_norm')


class _Interval:
  """Step metrics since the last flush: checked by the divergence guard, then logged."""

  def __init__(self):
    self.items = []
    self.last_finite = None
    self._fetched = {}  # id(call metrics) -> their host copy, while steps of the call remain

  def add(self, step, epoch, call_metrics, index, examples):
    """One step: its metrics are call_metrics[k][index] (a call's stacked metrics)."""
    self.items.append((step, epoch, (call_metrics, index), examples))

  def flush(self, steps_per_epoch, guard, upto=None):
    """Returns one record averaging the interval's steps up to `upto` (all:
    None), or None if there are none; raises DivergenceError at the first step
    whose loss is non-finite or too large."""
    items = [x for x in self.items if upto is None or x[0] <= upto]
    if not items:
      return None
    self.items = self.items[len(items):]
    # One transfer per call: a call's metrics serve all the records of its steps.
    calls = {id(m): m for _, _, (m, _), _ in items if id(m) not in self._fetched}
    self._fetched.update(zip(calls, jax.device_get(list(calls.values()))))
    fetched, left = self._fetched, {id(m) for _, _, (m, _), _ in self.items}
    self._fetched = {k: v for k, v in fetched.items() if k in left}
    # Each metric as one [len(items)] array in step order (items of one call are consecutive).
    segments = [(fetched[key], np.array([j for _, _, (_, j), _ in group]))
                for key, group in itertools.groupby(items, key=lambda x: id(x[2][0]))]
    host = {k: np.concatenate([np.asarray(m[k])[js] for m, js in segments]).astype(np.float64)
            for k in segments[0][0]}
    steps = [step for step, *_ in items]
    # grad_norm is NaN where it was not measured (train.record_ends)
    last_finite = lambda i: {'step': steps[i], **{k: float(v[i]) for k, v in host.items()
                                                  if k != 'grad_norm' or np.isfinite(v[i])}}
    loss = host['loss']
    i = guard.first_bad(loss)
    if i is not None:
      if i:
        self.last_finite = last_finite(i - 1)
      self.items, self._fetched = [], {}
      guard.check_loss(steps[i], float(loss[i]), context=f' (epoch {items[i][1] + 1}); last finite '
                       f'metrics: {self.last_finite}')  # raises
    self.last_finite = last_finite(len(items) - 1)
    record = {'kind': 'train', 'step': steps[-1], 'epoch': items[-1][1] + 1,
              'epoch_float': steps[-1] / steps_per_epoch,
              'examples': int(sum(e for *_, e in items))}
    for k, v in host.items():
      record[k] = float(v[-1]) if k.startswith(LAST_STEP_METRICS) else float(np.mean(v))
    return record


def record_ends(t, steps_per_epoch: int):
  """s -> whether a train record of metrics.jsonl ends after s steps (ints or
  traced arrays): every train.log_every_steps, at each epoch's end, and where
  a call ends for a checkpoint or the halt. The loop writes its records there,
  and the step measures the gradient norm there only."""
  log_every, ckpt_every = max(1, int(t.log_every_steps)), int(t.checkpoint_every_steps)
  halt = int(t.get('halt_after_steps', 0))

  def ends(s):
    e = (s % log_every == 0) | (s % steps_per_epoch == 0)
    if ckpt_every:
      e = e | (s % ckpt_every == 0)
    return e | (s == halt) if halt else e
  return ends


def final_evaluations(evaluator, variables, reads_annotations: bool, dump_dir=None) -> dict:
  """The best-valid state on test, looked at once; for a model whose scores
  read annotations, test and valid again with them withheld (the paper's
  privileged-information setting: annotations in training only)."""
  out = {'test': evaluator(variables, 'test', dump_dir)}
  if reads_annotations and evaluator.annotations:
    out['test_withheld'] = evaluator(variables, 'test', annotations=False)
    out['valid_withheld'] = evaluator(variables, 'valid', annotations=False)
  return out


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains, evaluates valid each `eval.every_epochs`, then test once with the best-valid state.

  Stops after `train.patience` epochs without a better valid Recall@10, or at
  `train.epochs` (a cap).

  Resumes from the latest checkpoint in workdir. Returns the results dict that
  is also written to workdir/results.json (or {'halted_at_step': n} when
  train.halt_after_steps stops the run early). The config is checked before any
  work; a workdir in use by another run is refused. Every process of a
  multi-process run returns the results; only process 0 writes files and prints.
  devices: the devices to train on (default: all; tests pick 1, 2 or 4).
  """
  wall_start = time.time()
  t = config.train
  config_checks.check(config, None if t.distributed else len(devices or jax.devices()))
  if t.distributed:
    parallel.initialize(t)  # before anything touches a device
    config_checks.check(config, len(devices or jax.devices()))
  with run_lock(workdir):
    return _train_and_evaluate(config, workdir, wall_start, devices)


RUN_LOCK = 'run.lock'  # process 0's lock file in a run's workdir


@contextlib.contextmanager
def run_lock(workdir: str):
  """Holds the workdir for this run: each process its own lock file (run.lock,
  run.lock.<process>) in the shared workdir. If any process finds its file
  held by a live run, every process raises, so none waits in a collective."""
  p = jax.process_index()
  with contextlib.ExitStack() as stack:
    busy = None
    try:
      stack.enter_context(workdir_lock.held(workdir, RUN_LOCK + (f'.{p}' if p else ''),
                                            f'workdir {workdir}'))
    except workdir_lock.WorkdirBusy as e:
      busy = e
    refused = parallel.failed_processes(busy is not None)
    if busy is not None:
      raise busy
    if refused:
      raise workdir_lock.WorkdirBusy(f'workdir {workdir} is in use by another run (processes '
                                     f'{refused} of this run found their lock held)')
    yield


def shard_sum(t, mesh, spec, pmap: bool):
  """train.batch_shards' `parallel.ShardedSum`, or None (0: one program over the batch)."""
  shards = int(t.batch_shards)
  if not shards:
    return None
  if pmap:
    raise config_checks.ConfigError(f"train.batch_shards={shards} needs train.parallel='jit' "
                                    '(or train.batch_shards=0)')
  if spec.batch_wide:
    raise config_checks.ConfigError(
        f'train.batch_shards={shards}: model.name={spec.name!r} reads other rows of the batch '
        '(in-batch negatives or per-row gradient sums), which fixed shards would cut; set '
        'train.batch_shards=0')
  return parallel.ShardedSum(mesh, shards, int(t.batch_size))


def make_runner(config, data, model, steps_per_epoch: int, devices=None, grad_norm_at=None):
  """(runner, optimizer): the train program of config.train on `devices` (None:
  all), jit or pmap by train.parallel, as train_and_evaluate runs it; the
  runner's calls take batches with raw items (sampler.with_item_inputs(...,
  raw=True)) or, given put_items' tables, without. optimizer(hparams) is the
  step's optax transformation; optimizer() the initial state's."""
  t = config.train
  pmap = t.parallel == 'pmap'
  mesh = parallel.make_mesh(devices)
  step_model = build_model(config, data, parallel.AXIS) if pmap else model
  optimizer = functools.partial(optim.create, t, steps_per_epoch, frozen=model.spec.frozen)
  step_fn = step_lib.make_train_step(step_model, optimizer, float(t.l2), parallel.AXIS if pmap else None,
                                     shard_sum(t, mesh, model.spec, pmap), grad_norm_at)
  call_fn = step_lib.scan_steps(
      step_fn, functools.partial(sampler_lib.device_item_inputs, modality=data.items.modality),
      step_lib.scan_unroll(model.spec))
  runner = parallel.PmapRunner(call_fn, devices) if pmap else parallel.JitRunner(call_fn, mesh)
  return runner, optimizer


def _train_and_evaluate(config, workdir: str, wall_start: float, devices=None) -> dict:
  t = config.train
  out = report.RunOutputs(workdir, parallel.is_writer())
  data = load.load(config)
  model = build_model(config, data)
  data = features_lib.for_model(config, data, model.spec)  # pre-extracted, if it reads them
  # jit's mesh and pmap's devices both span `devices`, or every process's devices.
  num_devices = len(devices) if devices is not None else jax.device_count()
  parallel.check_batch(int(t.batch_size), num_devices)
  sampler = sampler_lib.sampler_for(data, int(t.batch_size), int(t.seed), jax.process_index(),
                                    jax.process_count())
  spe, epochs = sampler.steps_per_epoch, int(t.epochs)
  ends_record = record_ends(t, spe)  # where records are written and the gradient norm measured
  # When every step ends a record the step measures the norm unconditionally, so
  # its program does not depend on the checkpoint and halt steps.
  norm_at = None if int(t.log_every_steps) <= 1 else ends_record
  runner, optimizer = make_runner(config, data, model, spe, devices, norm_at)
  tx, hparams = optimizer(), optim.hyperparameters(t)

  # Checkpoints are saved and restored by every process together; process 0
  # alone removes what a crashed save left, before any process opens them.
  writer = parallel.is_writer()
  checkpoints = ckpt_lib.Checkpointer(workdir, int(t.max_checkpoints), remove_unfinished=writer)
  best_checkpoint = ckpt_lib.Checkpointer(workdir, 1, 'best', remove_unfinished=writer)  # the best-valid state
  fingerprint = builder.fingerprint(load.content_settings(config))
  signature = ckpt_lib.shape_signature(config, fingerprint)
  meta = {'epoch': 0, 'step_in_epoch': 0, 'best': None, 'elapsed': 0.0, 'signature': signature,
          'stopped_by': None}
  latest = checkpoints.latest_step()
  if latest is not None:  # refused before the state's program is compiled
    ckpt_lib.check_compatible(checkpoints.restore_meta(latest)['signature'], signature,
                              checkpoints.directory)
  example = sampler_lib.with_item_inputs(next(sampler.batches(0)), data)
  state = step_lib.create_state(model, tx, example, int(t.seed))
  if latest is not None:
    state, meta = checkpoints.restore(latest, state)
    logging.info('resumed from step %d (epoch %d)', latest, meta['epoch'] + 1)
    out.say(f'resumed from checkpoint step {latest}')
  else:  # a fresh run: pretrained encoder weights, then another run's parameters
    # (train.init_from, a pretrained stage), dataset arrays
    state = init_encoder(state, tx, config, model)
    state, meta['init_from'] = stages.initial_state(config, workdir, state, data, model.spec, signature,
                                                    train_and_evaluate)
  out.truncate_after(latest or 0)  # lines of an unsaved past, and the final test line
  out.json('config.json', config.to_dict())

  per_call = step_lib.steps_per_call(int(t.steps_per_call), model.spec, spe)
  items = device_items(runner, data, t)
  evaluator = eval_lib.Evaluator(model, data, config.eval, parallel.eval_placement(int(config.eval.batch_size)))
  dstate = runner.put_state(state)
  key = jax.random.key(int(t.seed))
  guard = divergence.Guard(float(t.max_loss), meta.get('initial_loss'))
  # The first training batch and step: the probe that the state to be saved must score.
  probe = next(sampler.batches(0))
  probe = runner.put_batch({k: v[None] for k, v in (
      probe if items is not None else sampler_lib.with_item_inputs(probe, data, raw=True)).items()})

  def verify(global_step):
    guard.check_state(global_step, runner.get_state(dstate),
                      lambda: divergence.probe_loss(runner, dstate, probe, items, key, hparams),
                      checkpoints.latest_step())

  def variables(s=None):
    s = runner.get_state(dstate) if s is None else s
    return {'params': s.params, **({'batch_stats': s.batch_stats} if s.batch_stats else {})}

  def save(epoch, step_in_epoch, global_step):
    nonlocal clock
    verify(global_step)
    meta.update(epoch=epoch, step_in_epoch=step_in_epoch, config=json.loads(config.to_json()),
                elapsed=meta['elapsed'] + time.time() - session_start, initial_loss=guard.initial_loss)
    checkpoints.save(global_step, runner.get_state(dstate), meta)
    meta['elapsed'] -= time.time() - session_start  # counted again at the next save
    if clock is not None:
      clock = time.time()  # saving is not training time (it follows a flush)

  session_start = time.time()
  best_state = None  # the best-valid state, once this session finds one
  interval = _Interval()
  train_time, train_examples, eval_time, eval_users = 0.0, 0, 0.0, 0
  clock = None  # starts after the first (compiling) call
  compiled = set()  # call lengths compiled so far: a call that compiles is checked, not timed
  ckpt_every = int(t.checkpoint_every_steps)
  halt = int(t.get('halt_after_steps', 0))
  patience = int(t.patience)
  total_steps = epochs * spe
  # A call ends where a checkpoint or the halt must see that exact step's state.
  ends_call = lambda s: bool(ckpt_every and s % ckpt_every == 0) or s == halt

  def flush(upto=None):
    nonlocal clock, train_time
    record = interval.flush(spe, guard, upto)
    if record is None:
      return
    out.log(record)
    now = time.time()
    train_time += now - clock
    clock = now
    # Until a call that did not compile has run, there is no rate to show.
    rate = train_examples / train_time if train_examples and train_time > 0 else None
    remaining = (total_steps - record['step']) * t.batch_size / rate if rate else None
    out.say(report.progress_line(record['epoch'] - 1, epochs, record['step'] - (record['epoch'] - 1) * spe,
                                 spe, record['loss'], rate, remaining))

  for epoch in range(meta['epoch'], epochs if meta.get('stopped_by') is None else 0):
    start = meta['step_in_epoch'] if epoch == meta['epoch'] else 0
    calls = sampler.calls(epoch, start, per_call, ends_call)  # [n, B] batches per call
    for i, host_batches in prefetch(host_item_inputs(calls, data, items)):
      n, first = len(host_batches['weight']), epoch * spe + i
      compiles = n not in compiled
      if compiles and clock is not None:
        jax.block_until_ready(dstate)
        train_time += time.time() - clock
      dstate, m = runner.step(dstate, runner.put_batch(host_batches), items, key, first, hparams)
      examples = [sampler.examples(s) for s in range(i, i + n)]  # all processes' rows
      for j in range(n):
        interval.add(first + j + 1, epoch, m, j, int(examples[j]))
      if compiles:
        jax.block_until_ready(m)
        compiled.add(n)
        clock = time.time()
      else:
        train_examples += sum(examples)
      global_step = first + n  # steps done
      for s in range(first + 1, global_step + 1):
        if ends_record(s):
          flush(s)
      if ends_call(global_step) or (halt and global_step >= halt):
        flush()  # (a no-op unless the run resumed past train.halt_after_steps)
        save(epoch, i + n, global_step)
      if halt and global_step >= halt:
        checkpoints.close()
        best_checkpoint.close()
        out.close()
        return {'halted_at_step': global_step}

    done = epoch + 1
    if done % max(1, int(config.eval.every_epochs)) == 0 or done == epochs:
      valid = evaluator(variables(), 'valid')
      out.log({'kind': 'valid', 'step': done * spe, 'epoch': done, **valid})
      # Model selection: valid Recall@10 (all), or the first K when 10 is not in eval.ks.
      k = 10 if 10 in evaluator.ks else evaluator.ks[0]
      score = valid['all'][f'recall@{k}']['mean']
      if meta['best'] is None or score > meta['best']['score']:
        meta['best'] = {'score': score, 'epoch': done, 'valid': valid}
        verify(done * spe)
        best_state = ckpt_lib.host_copy(runner.get_state(dstate))  # kept: not read back at the end
        best_checkpoint.save(done * spe, best_state, meta)
      eval_users += valid['users']
      eval_time += valid['seconds']  # compilation excluded
      best = meta['best']
      out.say(f"epoch {done}: valid R@10 {score:.4f} (best {best['score']:.4f} at epoch {best['epoch']})")
      if clock is not None:
        clock = time.time()  # evaluation is not training time
      if patience and done - best['epoch'] >= patience:
        meta['stopped_by'] = 'patience'
        out.say(f'early stop: no valid improvement for {patience} epochs')
    if done == epochs:
      meta['stopped_by'] = 'epochs'
    save(done, 0, done * spe)
    if meta['stopped_by']:
      break

  checkpoints.close()
  # The test split is looked at once, with the best-valid state: this session's
  # copy, or (the best came before a resume) the saved one.
  if best_state is None:
    best_state, _ = best_checkpoint.restore(best_checkpoint.latest_step(), runner.get_state(dstate))
  best_checkpoint.close()
  dump = os.path.join(workdir, 'dump') if config.eval.dump else None
  final = final_evaluations(evaluator, variables(best_state), model.spec.reads_annotations, dump)
  for kind, metrics in final.items():
    out.log({'kind': kind, 'step': meta['best']['epoch'] * spe, 'epoch': meta['best']['epoch'], **metrics})
    eval_users += metrics['users']
    eval_time += metrics['seconds']
  results = {
      'model': config.model.name if config.model.name != 'cierec' else f'cierec({config.model.backbone})',
      'best_epoch': meta['best']['epoch'], 'valid': meta['best']['valid'], **final,
      'epochs_trained': meta['epoch'], 'stopped_by': meta['stopped_by'],
      'dataset': data.stats, 'config': config.to_dict(), 'encoder': model.spec.encoder,
      'wall_seconds': meta['elapsed'] + time.time() - session_start,
      # None when every call compiled (untimed), e.g. one call per epoch and one epoch
      'train_examples_per_second': train_examples / train_time if train_examples else None,
      'eval_users_per_second': eval_users / eval_time if eval_time else None,
      'devices': device_info(t.parallel, num_devices), 'steps': meta['epoch'] * spe, 'init_from': meta.get('init_from'),
      'session_wall_seconds': time.time() - wall_start,
  }
  out.json('results.json', results)
  out.close()
  out.curves()
  rows = [(results['model'], results['test'])]
  if 'test_withheld' in results:
    rows.append((f"{results['model']}, annotations withheld", results['test_withheld']))
  out.say(report.table(rows))
  return results
