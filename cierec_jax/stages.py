"""How a run's first state is made: another run's trained parameters
(`train.init_from`, or the pretrained stage of a two-stage method) and the
dataset arrays a model holds (spec.dataset_arrays).

Two-stage methods start from a trained base model, as in their papers: AMF
from MF (APR), AMR from VBPR, DropoutNet from MF (its frozen preference
vectors). With `train.init_from` empty, the base is trained in
`<workdir>/stage_<base>` with the same config (dataset, seed, training
budget) but `model.name=<base>`, or reused there once it has results.json.
"""

import os

import flax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from cierec_jax import report as report_lib

# model.name -> the model whose trained parameters it starts from.
PRETRAINED = {'amf': 'mf', 'amr': 'vbpr', 'dropoutnet': 'mf'}
COLLECTIONS = ('params', 'batch_stats')


def stage_workdir(workdir: str, base: str) -> str:
  return os.path.join(workdir, f'stage_{base}')


def stage_config(config, base: str):
  """config for the pretrained stage: the same, with model.name=base."""
  c = config.copy_and_resolve_references()
  c.model.name = base
  c.train.init_from = ''
  c.train.halt_after_steps = 0  # the halt (a simulated preemption) is the named run's
  c.train.distributed = False  # this process is already initialised
  return c


def source_workdir(config, workdir: str, train_fn) -> str | None:
  """The workdir this run starts from: train.init_from, else the model's
  pretrained stage (trained by `train_fn(config, workdir)` unless finished), else None."""
  if config.train.init_from:
    return config.train.init_from
  base = PRETRAINED.get(config.model.name)
  if base is None:
    return None
  stage = stage_workdir(workdir, base)
  if os.path.exists(os.path.join(stage, 'results.json')):
    report_lib.say(f'stage {base}: reusing the finished run in {stage}')
  else:
    report_lib.say(f'stage {base}: training model.name={base} in {stage} first')
    train_fn(stage_config(config, base), stage)
  return stage


def restore_best(source: str, signature: dict) -> dict:
  """The variables ({'params', 'batch_stats'}) of the best-valid state in
  `source`; refuses a run fit to another dataset."""
  directory = os.path.join(source, 'best')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'train.init_from={source!r}: no best-valid state ({directory} is '
                            'missing); expected the workdir of a run that has been evaluated')
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=('state', 'meta'))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'train.init_from={source!r}: {directory} holds no checkpoint')
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                      meta=ocp.args.JsonRestore()))
  manager.close()
  saved = out['meta']['signature'].get('dataset_fingerprint')
  if saved != signature['dataset_fingerprint']:
    raise ValueError(f'train.init_from={source!r} was trained on another dataset (fingerprint '
                     f"{saved}, this run {signature['dataset_fingerprint']}); use a run of the "
                     'same dataset config')
  return {k: out['state'].get(k) or {} for k in COLLECTIONS}


def copy_matching(target: dict, source: dict):
  """Copies every leaf of `target` whose path is in `source` with the same shape.

  target, source: nested dicts of arrays. Returns (new target, copied paths,
  [(path, source shape, target shape)] of shape mismatches, paths not in source).
  """
  flat_t = flax.traverse_util.flatten_dict(target, sep='/')
  flat_s = flax.traverse_util.flatten_dict(source, sep='/')
  copied, mismatched, missing = [], [], []
  for path, value in flat_t.items():
    if path not in flat_s:
      missing.append(path)
    elif np.shape(flat_s[path]) != np.shape(value):
      mismatched.append((path, np.shape(flat_s[path]), np.shape(value)))
    else:
      flat_t[path] = jnp.asarray(flat_s[path], dtype=value.dtype)
      copied.append(path)
  return flax.traverse_util.unflatten_dict(flat_t, sep='/'), copied, mismatched, missing


def init_from(state, source: str, signature: dict, frozen=()):
  """state with the parameters (and BatchNorm statistics) of `source`'s
  best-valid state copied where paths and shapes match; prints what was
  copied and what was not. Refuses when no parameter matches, or when a
  frozen subtree (e.g. DropoutNet's MF vectors) is not fully provided."""
  saved = restore_best(source, signature)
  new, report = {}, []
  for collection in COLLECTIONS:
    target = getattr(state, collection)
    if not target:
      new[collection] = target
      continue
    new[collection], copied, mismatched, missing = copy_matching(target, saved[collection])
    if collection == 'params':
      if not copied:
        raise ValueError(f'train.init_from={source!r}: none of this model\'s parameters match '
                         f'that run\'s by path and shape (it has '
                         f"{sorted(flax.traverse_util.flatten_dict(saved['params'], sep='/'))})")
      unset = sorted(p for p in missing + [m[0] for m in mismatched] if p.split('/')[0] in frozen)
      if unset:
        raise ValueError(f'train.init_from={source!r} does not provide the frozen parameters '
                         f'{unset}; start from a run of the model they come from')
    report.append(f'  {collection}: copied {len(copied)}: {", ".join(copied) or "-"}')
    if mismatched:
      report.append(f'  {collection}: shapes differ, kept initial values: ' + ', '.join(
          f'{p} (source {s}, model {t})' for p, s, t in mismatched))
    if missing:
      report.append(f'  {collection}: not in the source, kept initial values: {", ".join(missing)}')
  report_lib.say(f'init_from {source}:\n' + '\n'.join(report))
  return state.replace(**new)


def with_dataset_arrays(state, data, names):
  """state with params[name] = data.<name> as float32 [I] for each name."""
  params = dict(state.params)
  for name in names:
    value = np.asarray(getattr(data, name), np.float32)
    if params[name].shape != value.shape:
      raise ValueError(f'params[{name!r}] has shape {params[name].shape}, the dataset\'s {name} '
                       f'{value.shape}')
    params[name] = jnp.asarray(value)
  return state.replace(params=params)


def initial_state(config, workdir: str, state, data, spec, signature: dict, train_fn):
  """A fresh run's first state: `state` (just initialised) started from
  train.init_from or the pretrained stage, with the dataset arrays written.
  Returns (state, the source workdir or None)."""
  source = source_workdir(config, workdir, train_fn)
  if source is not None:
    needs = spec.frozen if config.model.name in PRETRAINED else ()
    state = init_from(state, source, signature, tuple(f for f in needs if f not in spec.dataset_arrays))
  return with_dataset_arrays(state, data, spec.dataset_arrays), source
