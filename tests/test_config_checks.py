"""Config validation: every value no run can mean is named, all at once, before any work."""

import ml_collections
import pytest

from cierec_jax import config_checks
from configs import allrecipes, cds, default, movielens


def _with(config, **fields):
  """config with 'section.name' fields replaced, whatever their type (as a config file could)."""
  for field, value in fields.items():
    section, name = field.replace('__', '.').split('.')
    values = config[section].to_dict()
    values[name] = value
    config[section] = ml_collections.ConfigDict(values)
  return config


@pytest.mark.parametrize('config_module', [default, movielens, cds, allrecipes])
def test_shipped_configs_pass(config_module):
  assert config_checks.problems(config_module.get_config(), num_devices=4) == []


INVALID = [
    # The probes.
    ('train.lr', -1.0, 'expected a finite number > 0'),
    ('train.batch_size', 0, 'expected an integer >= 1'),
    ('train.batch_size', -256, 'expected an integer >= 1'),
    ('train.epochs', 0, 'expected an integer >= 1'),
    ('model.gate_activation', 'foo', "expected one of ('sigmoid', 'identity')"),
    # And more.
    ('train.lr', 0.0, '> 0'),
    ('train.lr', float('nan'), 'finite'),
    ('train.lr', float('inf'), 'finite'),
    ('train.lr', '0.05', 'finite number'),
    ('train.epochs', 2.5, 'an integer'),
    ('train.epochs', True, 'an integer'),
    ('train.dqn_lr', 0.0, '> 0'),
    ('train.l2', -1e-4, '>= 0'),
    ('train.weight_l2', -0.1, '>= 0'),
    ('train.decay_rate', 0.0, '> 0 <= 1'),
    ('train.decay_rate', 2.0, '<= 1'),
    ('train.decay_epochs', 0, '>= 1'),
    ('train.adagrad_initial_accumulator', -0.1, '>= 0'),
    ('train.parallel', 'vmap', "one of ('jit', 'pmap')"),
    ('train.distributed', 'yes', 'True or False'),
    ('train.log_every_steps', 0, '>= 1'),
    ('train.checkpoint_every_steps', -1, '>= 0'),
    ('train.max_checkpoints', 0, '>= 1'),
    ('train.halt_after_steps', -1, '>= 0'),
    ('train.max_loss', -1.0, '>= 0'),
    ('train.seed', -1, '>= 0'),
    ('model.name', 'nope', "one of ('mf', 'vbpr'"),
    ('model.backbone', 'bpr', "one of ('mf', 'vbpr')"),
    ('model.encoder', 'vit', 'one of'),
    ('model.embed_dim', 0, '>= 1'),
    ('model.feature_dim', -1, '>= 1'),
    ('model.encoder_width', 0, '>= 1'),
    ('model.gr', 1, 'True or False'),
    ('model.gr_actions', (), 'a non-empty list'),
    ('model.gr_actions', (0.2, -1.0), 'each item a finite number > 0'),
    ('dataset.name', 'imagenet', "one of ('allrecipes', 'amazon_cds', 'movielens100k', 'synthetic')"),
    ('dataset.data_dir', '', 'a non-empty string'),
    ('dataset.seed', -1, '>= 0'),
    ('dataset.train_fraction', 0.0, '> 0 < 1'),
    ('dataset.train_fraction', 1.0, '< 1'),
    ('dataset.valid_fraction', 0.0, '> 0 < 1'),
    ('dataset.cold_max_train_interactions', -1, '>= 0'),
    ('dataset.min_element_count', 0, '>= 1'),
    ('dataset.max_elements', 0, '>= 1'),
    ('dataset.image_size', 0, '>= 1'),
    ('dataset.num_shapes', 9, '<= 8'),
    ('dataset.num_colours', 0, '>= 1'),
    ('dataset.mean_interactions', 0.5, '>= 1'),
    ('eval.num_negatives', 0, '>= 1'),
    ('eval.repeats', 0, '>= 1'),
    ('eval.ks', (), 'a non-empty list'),
    ('eval.ks', (10, 0), 'each item an integer >= 1'),
    ('eval.batch_size', 0, '>= 1'),
    ('eval.encode_batch_size', -8, '>= 1'),
    ('eval.every_epochs', 0, '>= 1'),
    ('eval.annotations', 'no', 'True or False'),
    ('model.encoder_init', None, 'a string'),
    ('model.freeze_encoder', 'yes', 'True or False'),
    ('pretrain.epochs', 0, '>= 1'),
    ('pretrain.lr', 0.0, '> 0'),
    ('dataset.num_colours', 257, '<= 256'),
    ('dataset.num_sizes', 0, '>= 1'),
    ('train.coordinator_address', 12355, 'a string'),
    ('train.coordinator_address', 'localhost', 'host:port of process 0'),
    ('train.num_processes', -1, '>= 0'),
    ('train.process_id', -2, '>= -1'),
    ('train.batch_shards', -1, '>= 0'),
]


@pytest.mark.parametrize('field, value, expected', INVALID, ids=[f'{f}={v!r}' for f, v, _ in INVALID])
def test_invalid_value_is_named(field, value, expected):
  c = _with(default.get_config(), **{field: value})
  found = config_checks.problems(c, num_devices=4)
  assert len(found) == 1, found
  assert found[0].startswith(f'{field}={value!r} (') and expected in found[0], found[0]


@pytest.mark.parametrize('fields, expected', [
    ({'dataset.train_fraction': 0.9, 'dataset.valid_fraction': 0.1},
     'dataset.train_fraction + dataset.valid_fraction = 1 (expected < 1'),
    ({'dataset.min_elements_per_item': 4}, 'dataset.min_elements_per_item=4 > dataset.max_elements_per_item=3'),
    ({'model.ci': False}, 'model.pi=True needs model.ci=True'),
    ({'model.ci': False, 'model.pi': False, 'model.gr': False}, 'model.ta=True needs model.ci=True'),
    ({'tuned_lr.mf': -0.05}, "tuned_lr.mf=-0.05 (expected a finite number > 0)"),
    ({'tuned_weight_l2.vbpr': -1.0}, "tuned_weight_l2.vbpr=-1.0 (expected a finite number >= 0)"),
    ({'dataset.name': 'amazon_cds'}, "model.encoder_init='pretrain' with dataset.name='amazon_cds'"),
    ({'pretrain.batch_size': 30000}, 'pretrain.batch_size=30000 > pretrain.num_train=20000'),
    ({'train.num_processes': 2, 'train.process_id': 2}, 'train.process_id=2 (expected < train.num_processes=2)'),
    ({'train.batch_shards': 512}, 'train.batch_shards=512 (expected to divide train.batch_size=256)'),
    ({'train.batch_shards': 6, 'train.batch_size': 36}, 'train.batch_shards=6 (expected a power of two, or 0)'),
    ({'train.batch_shards': 4, 'train.parallel': 'pmap'}, "train.batch_shards=4 with train.parallel='pmap'"),
])
def test_relations_between_fields(fields, expected):
  found = config_checks.problems(_with(default.get_config(), **fields))
  assert any(expected in p for p in found), found


def test_all_problems_in_one_error():
  c = _with(default.get_config(), **{'train.lr': -1.0, 'train.batch_size': 0, 'model.gate_activation': 'foo'})
  with pytest.raises(config_checks.ConfigError, match=r'invalid config \(3 problems\): ') as e:
    config_checks.check(c)
  for field in ('train.lr=-1.0', 'train.batch_size=0', "model.gate_activation='foo'"):
    assert field in str(e.value)
  assert '\n' not in str(e.value)


def test_batch_must_split_over_the_devices():
  c = _with(default.get_config(), **{'train.batch_size': 6})
  assert config_checks.problems(c) == []  # not a training run: devices unknown
  assert config_checks.problems(c, num_devices=4) == [
      'train.batch_size=6 (expected a multiple of the 4 devices)']
  c = _with(default.get_config(), **{'train.batch_size': 2})
  assert config_checks.problems(c, num_devices=4) == [
      'train.batch_size=2 (expected a multiple of the 4 devices)']
  c = _with(default.get_config(), **{'train.batch_shards': 2})
  assert config_checks.problems(c, num_devices=2) == []
  assert config_checks.problems(c, num_devices=4) == [
      'train.batch_shards=2 (expected a multiple of the 4 devices)']


def test_unknown_fields_pass_and_known_fields_are_checked():
  c = default.get_config()
  c.extra = ml_collections.ConfigDict({'anything': -1})  # no rule: not looked at
  assert config_checks.problems(c) == []
  c.train.steps_per_call = -1
  c.model.dropout_rate = 1.0
  c.model.conv_impl = 'whatever'
  assert sorted(config_checks.problems(c)) == [
      "model.conv_impl='whatever' (expected one of ('auto', 'xla', 'patches', 'winograd'))",
      'model.dropout_rate=1.0 (expected a finite number >= 0 < 1)',
      'train.steps_per_call=-1 (expected an integer >= 0)']
