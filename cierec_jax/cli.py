"""The command-line shell of the prepare-once programs (pretrain, features)."""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags


def run_with_config(fn):
  """Runs fn(config) as an absl program with a required --config flag.

  The flag is defined here, when the program starts, not when its module is
  imported: train.py imports those modules next to main.py's own --config.
  """
  def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    fn(flags.FLAGS.config)

  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main)
