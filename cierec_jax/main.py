"""Trains and evaluates one configuration.

  python -m cierec_jax.main --config=configs/default.py --workdir=runs/default \
      --config.model.gr=False

A refused input (config, raw data, busy workdir) or a diverged run prints one
line and exits with status 1; --verbose adds the traceback.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cierec_jax import cli
from cierec_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(cli.reporting_user_errors(main))
