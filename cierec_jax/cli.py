"""How the command lines report a refused input: one line on stderr and exit
status 1, without a traceback (`--verbose` shows it); the shell of the
prepare-once programs (pretrain, features)."""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cierec_jax import config_checks
from cierec_jax.config_checks import ConfigError
from cierec_jax.data.errors import DataError
from cierec_jax.divergence import DivergenceError
from cierec_jax.workdir_lock import WorkdirBusy

_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show the traceback of a refused input or run.')

# Errors that name what the user gave (a file, a field, a workdir) or a run that
# diverged; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, DataError, DivergenceError, WorkdirBusy)


def reporting_user_errors(main):
  """Wraps an absl main so that USER_ERRORS end the program with one line."""
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if _VERBOSE.value:
        raise
      message = ' '.join(str(e).split('\n'))
      print(f'error: {message} ({type(e).__name__}; --verbose shows the traceback)',
            file=sys.stderr, flush=True)
      sys.exit(1)
  return wrapped


def run_with_config(fn):
  """Runs fn(config) as an absl program: a required --config flag, the config
  checked first, refused inputs reported in one line (reporting_user_errors).

  The --config flag is defined here, when the program starts, not when its
  module is imported: train.py imports those modules next to main.py's own --config.
  """
  def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    config_checks.check(flags.FLAGS.config)
    fn(flags.FLAGS.config)

  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(reporting_user_errors(main))
