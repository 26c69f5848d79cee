"""Orbax checkpoints in workdir/checkpoints: train state + sampler position + config."""

import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from cierec_jax.config_checks import ConfigError

# What orbax names a step folder while it is being written.
UNFINISHED = '.orbax-checkpoint-tmp'

# Fields whose change alters parameter shapes or the data the state was fit to.
SHAPE_FIELDS = ('model.name', 'model.backbone', 'model.ci', 'model.ta', 'model.gr', 'model.pi',
                'model.embed_dim', 'model.feature_dim', 'model.encoder', 'model.encoder_width',
                'model.gr_actions', 'model.tower_dims', 'dataset_fingerprint')


class Checkpointer:
  """Saves (state, meta) at a global step; meta is JSON (epoch, position, config, best)."""

  def __init__(self, workdir: str, max_to_keep: int = 2, name: str = 'checkpoints',
               remove_unfinished: bool = False):
    """remove_unfinished: delete step folders a crashed save left half-written
    (only for the run that holds the workdir lock)."""
    self.directory = os.path.abspath(os.path.join(workdir, name))
    if remove_unfinished and os.path.isdir(self.directory):
      for entry in os.listdir(self.directory):
        if UNFINISHED in entry:
          print(f'removing the unfinished checkpoint {entry} in {self.directory}', file=sys.stderr)
          shutil.rmtree(os.path.join(self.directory, entry))
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'meta'),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict):
    """state: replicated jax.Arrays or host arrays; written as host_copy(state)."""
    if step in self.manager.all_steps():  # redone after a resume: same content, replace it
      self.manager.delete(step)
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_copy(state)),
                                                    meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state):
    """(state as host numpy arrays, meta); abstract_state gives the tree, shapes and dtypes."""
    target = jax.tree.map(lambda x: np.empty(np.shape(x), x.dtype), abstract_state)  # np.empty: no pages touched
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return out['state'], out['meta']

  def close(self):
    self.manager.close()


def host_copy(state):
  """The state's leaves as host numpy arrays (one copy of each replicated
  jax.Array). Orbax writes numpy leaves from process 0 alone and 2.5x faster
  than jax.Arrays: 600 small leaves (the tiny CIERec state's size) in 0.8 s
  against 2.0 s, as each jax.Array goes through its replica and shard logic."""
  def leaf(x):
    if isinstance(x, jax.Array):
      if not x.is_fully_replicated:
        raise ValueError(f'a checkpointed state leaf is sharded ({x.sharding}); expected replicated')
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(leaf, state)


def shape_signature(config, fingerprint: str) -> dict:
  sig = {f: config.model[f.split('.')[1]] for f in SHAPE_FIELDS if f.startswith('model.')}
  sig['model.gr_actions'] = [float(a) for a in sig['model.gr_actions']]
  sig['model.tower_dims'] = [int(w) for w in sig['model.tower_dims']]
  sig['dataset_fingerprint'] = fingerprint
  return sig


def check_compatible(saved: dict, new: dict, directory: str):
  """Refuses to resume a state trained with another model shape or dataset."""
  diffs = [f'{k}: saved {saved.get(k)!r}, now {new.get(k)!r}' for k in new if saved.get(k) != new.get(k)]
  if diffs:
    raise ConfigError(f'{directory} holds a run whose model or data differ from this config ('
                     + '; '.join(diffs) + '). Use a new --workdir, or restore those fields.')
