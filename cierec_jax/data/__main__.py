"""Prepares a dataset (once; later calls reuse it) and prints its statistics as one JSON line.

  python -m cierec_jax.data --config=configs/default.py

A refused config or raw file prints one line and exits with status 1;
--verbose adds the traceback.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cierec_jax import cli
from cierec_jax import config_checks
from cierec_jax.data import load

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config_checks.check(_CONFIG.value)
  print(load.stats_json(_CONFIG.value), flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(cli.reporting_user_errors(main))
