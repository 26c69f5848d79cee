"""Refuses a config no run can mean, before any work, listing every bad field.

`FIELDS` maps a dotted field to its rule; `CROSS` holds the rules that relate
fields. A rule returns what was expected (a phrase) when the value breaks it,
else None. Fields a config does not have are skipped (dataset-specific fields,
fields of other branches), and fields without a rule are not looked at, so a
new field only needs its line here.
"""

import math
import re

from cierec_jax.data import amazon_cds
from cierec_jax.data import load
from cierec_jax.data import synthetic
from cierec_jax.models import conv_ops
from cierec_jax.models import gates
from cierec_jax.models import registry
from cierec_jax.models import spec

PARALLEL_MODES = ('jit', 'pmap')


class ConfigError(ValueError):
  """One or more config fields hold values no run can use."""


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None):
  """An int (not a bool) in [lo, hi]."""
  want = 'an integer' + (f' >= {lo}' if lo is not None else '') + (f' <= {hi}' if hi is not None else '')
  ok = lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
  return lambda v: None if ok(v) else want


def number(gt=None, ge=None, lt=None, le=None):
  """A finite int or float within the given bounds."""
  bounds = [(gt, '>', lambda v, b: v > b), (ge, '>=', lambda v, b: v >= b),
            (lt, '<', lambda v, b: v < b), (le, '<=', lambda v, b: v <= b)]
  bounds = [(b, op, f) for b, op, f in bounds if b is not None]
  want = 'a finite number' + ''.join(f' {op} {b:g}' for b, op, _ in bounds)
  ok = lambda v: _is_number(v) and all(f(v, b) for b, _, f in bounds)
  return lambda v: None if ok(v) else want


def fraction(v):
  return number(gt=0, lt=1)(v)


def boolean(v):
  return None if isinstance(v, bool) else 'True or False'


def text(non_empty: bool = False):
  want = 'a non-empty string' if non_empty else 'a string'
  return lambda v: None if isinstance(v, str) and (v or not non_empty) else want


def one_of(choices):
  """choices: a tuple, or a function returning one (read when checked: registries fill late)."""
  def rule(v):
    allowed = tuple(choices() if callable(choices) else choices)
    return None if isinstance(v, str) and v in allowed else f'one of {allowed}'
  return rule


def sequence(item_rule):
  """A non-empty list or tuple whose every item passes item_rule."""
  def rule(v):
    if not isinstance(v, (list, tuple)) or not v:
      return 'a non-empty list'
    bad = [item_rule(x) for x in v]
    return next((f'a non-empty list, each item {b}' for b in bad if b), None)
  return rule


FIELDS = {
    'dataset.name': one_of(lambda: sorted(load.builders())),
    'dataset.data_dir': text(non_empty=True),
    'dataset.manual_dir': text(),
    'dataset.seed': integer(lo=0),
    'dataset.train_fraction': fraction,
    'dataset.valid_fraction': fraction,
    'dataset.cold_max_train_interactions': integer(lo=0),
    'dataset.cold_item_max_train_interactions': integer(lo=0),
    'dataset.min_element_count': integer(lo=1),
    'dataset.max_elements': integer(lo=1),
    'dataset.preload': boolean,
    'dataset.image_size': integer(lo=1),
    'dataset.variant': one_of(amazon_cds.VARIANTS),
    'dataset.min_entity_items': integer(lo=1),
    # synthetic
    'dataset.num_users': integer(lo=1),
    'dataset.num_items': integer(lo=2),
    'dataset.num_shapes': integer(lo=1, hi=len(synthetic.SHAPES)),
    'dataset.num_colours': integer(lo=1, hi=synthetic.MAX_COLOURS),
    'dataset.num_sizes': integer(lo=1),
    'dataset.min_elements_per_item': integer(lo=1),
    'dataset.max_elements_per_item': integer(lo=1),
    'dataset.liked_elements': integer(lo=1),
    'dataset.mean_interactions': number(ge=1),
    'dataset.min_interactions': integer(lo=1),
    'dataset.popularity_exponent': number(ge=0),
    'dataset.content_weight': number(ge=0),
    'dataset.collab_weight': number(ge=0),
    'dataset.latent_dim': integer(lo=1),
    'dataset.noise': number(ge=0),

    'model.name': one_of(registry.names),
    'model.backbone': one_of(spec.BACKBONES),
    'model.ci': boolean,
    'model.ta': boolean,
    'model.gr': boolean,
    'model.pi': boolean,
    'model.embed_dim': integer(lo=1),
    'model.feature_dim': integer(lo=1),
    'model.encoder': one_of(spec.ENCODERS),
    'model.encoder_width': integer(lo=1),
    'model.gate_activation': one_of(gates.ACTIVATIONS),
    'model.gr_actions': sequence(number(gt=0)),
    'model.annotation_dropout': number(ge=0, lt=1),
    # Fields other branches add: checked once merged (skipped while absent).
    'model.dropout_rate': number(ge=0, lt=1),
    'model.temperature': number(gt=0),
    'model.adv_epsilon': number(ge=0),
    'model.freeze_encoder': boolean,
    'model.encoder_init': text(),
    'model.conv_impl': one_of(conv_ops.CONV_IMPLS),

    # the synthetic pretraining corpus (cierec_jax.pretrain)
    'pretrain.seed': integer(lo=0),
    'pretrain.num_train': integer(lo=1),
    'pretrain.num_holdout': integer(lo=1),
    'pretrain.max_glyphs': integer(lo=1),
    'pretrain.epochs': integer(lo=1),
    'pretrain.batch_size': integer(lo=1),
    'pretrain.lr': number(gt=0),

    'train.seed': integer(lo=0),
    'train.epochs': integer(lo=1),
    'train.batch_size': integer(lo=1),
    'train.lr': number(gt=0),
    'train.adagrad_initial_accumulator': number(ge=0),
    'train.dqn_lr': number(gt=0),
    'train.decay_epochs': integer(lo=1),
    'train.decay_rate': number(gt=0, le=1),
    'train.l2': number(ge=0),
    'train.weight_l2': number(ge=0),
    'train.parallel': one_of(PARALLEL_MODES),
    'train.distributed': boolean,
    'train.coordinator_address': text(),
    'train.num_processes': integer(lo=0),  # 0: unset
    'train.process_id': integer(lo=-1),  # -1: unset
    'train.batch_shards': integer(lo=0),  # 0: off
    'train.log_every_steps': integer(lo=1),
    'train.checkpoint_every_steps': integer(lo=0),
    'train.max_checkpoints': integer(lo=1),
    'train.halt_after_steps': integer(lo=0),
    'train.max_loss': number(ge=0),
    # Fields other branches add: checked once merged (skipped while absent).
    'train.steps_per_call': integer(lo=0),  # 0: auto
    'train.device_items_max_mb': number(ge=0),
    'train.init_from': text(),
    'train.patience': integer(lo=0),

    'eval.num_negatives': integer(lo=1),
    'eval.repeats': integer(lo=1),
    'eval.ks': sequence(integer(lo=1)),
    'eval.annotations': boolean,
    'eval.dump': boolean,
    'eval.batch_size': integer(lo=1),
    'eval.encode_batch_size': integer(lo=1),
    'eval.every_epochs': integer(lo=1),
}


def _get(config, field):
  node = config
  for part in field.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False, None
    node = node[part]
  return True, node


def _splits(get):
  t, v = get('dataset.train_fraction'), get('dataset.valid_fraction')
  if not fraction(t) and not fraction(v) and t + v >= 1:
    return [f'dataset.train_fraction + dataset.valid_fraction = {t + v:g} (expected < 1: the rest is test)']
  return []


def _elements_per_item(get):
  lo, hi = get('dataset.min_elements_per_item'), get('dataset.max_elements_per_item')
  if _is_int(lo) and _is_int(hi) and lo > hi:
    return [f'dataset.min_elements_per_item={lo} > dataset.max_elements_per_item={hi}']
  return []


def _cierec_parts(get):
  """Checked again by spec.create; here so the run stops before any work."""
  if get('model.name') != 'cierec' or get('model.ci') is not False:
    return []
  return [f'model.{f}=True needs model.ci=True (without CI the model is the Base)'
          for f in ('pi', 'gr', 'ta') if get(f'model.{f}') is True]


def _pretrain(get):
  out = []
  name = get('dataset.name')
  if get('model.encoder_init') == 'pretrain' and name in load.builders() and name != 'synthetic':
    out.append(f"model.encoder_init='pretrain' with dataset.name={name!r} (the "
               'glyph pretraining is the synthetic world\'s; give ResNet18 weights, README: '
               'Pretrained encoders)')
  b, n = get('pretrain.batch_size'), get('pretrain.num_train')
  if _is_int(b) and _is_int(n) and b > n:
    out.append(f'pretrain.batch_size={b} > pretrain.num_train={n}')
  return out


def _tuned(get):
  """The experiment scripts' per-model values: tuned_lr > 0, tuned_weight_l2 >= 0."""
  out = []
  for field, check, expected in (('tuned_lr', number(gt=0), '> 0'),
                                 ('tuned_weight_l2', number(ge=0), '>= 0')):
    values = get(field)
    if hasattr(values, 'items'):
      out += [f'{field}.{k}={v!r} (expected a finite number {expected})' for k, v in values.items()
              if check(v)]
  return out


def _processes(get):
  """Process settings (train.distributed); the JAX_* variables fill the unset ones later."""
  out = []
  address, n, p = (get(f'train.{f}') for f in ('coordinator_address', 'num_processes', 'process_id'))
  if isinstance(address, str) and address and not re.fullmatch(r'\[?[\w.:-]+\]?:\d+', address):
    out.append(f'train.coordinator_address={address!r} (expected host:port of process 0)')
  if _is_int(n) and _is_int(p) and n > 0 and p >= n:
    out.append(f'train.process_id={p} (expected < train.num_processes={n})')
  return out


def _batch_shards(get):
  s, b = get('train.batch_shards'), get('train.batch_size')
  if not (_is_int(s) and s > 0):
    return []
  out = []
  if s & (s - 1):
    out.append(f'train.batch_shards={s} (expected a power of two, or 0)')
  if _is_int(b) and b > 0 and b % s:
    out.append(f'train.batch_shards={s} (expected to divide train.batch_size={b})')
  if get('train.parallel') == 'pmap':
    out.append(f"train.batch_shards={s} with train.parallel='pmap' (expected 'jit', or batch_shards=0)")
  return out


CROSS = (_splits, _elements_per_item, _cierec_parts, _pretrain, _tuned, _processes, _batch_shards)


def problems(config, num_devices: int | None = None) -> list[str]:
  """Every broken rule, as 'field=value (expected ...)'. num_devices: the
  devices a training batch is split over (None: not a training run)."""
  out = []
  for field, rule in FIELDS.items():
    present, value = _get(config, field)
    if present and (want := rule(value)):
      out.append(f'{field}={value!r} (expected {want})')
  get = lambda field: _get(config, field)[1]
  for rule in CROSS:
    out += rule(get)
  b = get('train.batch_size')
  if num_devices and _is_int(b) and b > 0 and b % num_devices:
    out.append(f'train.batch_size={b} (expected a multiple of the {num_devices} devices)')
  s = get('train.batch_shards')
  if num_devices and _is_int(s) and s > 0 and s % num_devices:
    out.append(f'train.batch_shards={s} (expected a multiple of the {num_devices} devices)')
  return out


def check(config, num_devices: int | None = None):
  """Raises ConfigError naming every bad field; see problems()."""
  found = problems(config, num_devices)
  if found:
    raise ConfigError(f'invalid config ({len(found)} problem{"s" * (len(found) > 1)}): '
                      + '; '.join(found))
