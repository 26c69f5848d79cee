"""How the command lines report a refused input: one line on stderr and exit
status 1, without a traceback (`--verbose` shows it)."""

import sys

from absl import flags

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
