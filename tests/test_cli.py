"""Refused inputs reach the user as one line and status 1; --verbose keeps the traceback."""

from absl.testing import flagsaver
import pytest

from cierec_jax import cli
from cierec_jax import report
from cierec_jax.data.errors import DataError


def _failing(error):
  def main(argv):
    del argv
    raise error
  return cli.reporting_user_errors(main)


def test_user_error_is_one_line_and_status_1(capsys):
  with flagsaver.as_parsed((cli._VERBOSE, 'false')):  # pylint: disable=protected-access
    with pytest.raises(SystemExit) as e:
      _failing(DataError('empty user_id', 'ratings.csv', 3))(['prog'])
  assert e.value.code == 1
  assert capsys.readouterr().err == (
      'error: ratings.csv:3: empty user_id (DataError; --verbose shows the traceback)\n')


def test_verbose_and_other_errors_keep_the_traceback():
  with flagsaver.as_parsed((cli._VERBOSE, 'true')):  # pylint: disable=protected-access
    with pytest.raises(DataError):
      _failing(DataError('bad'))(['prog'])
  with flagsaver.as_parsed((cli._VERBOSE, 'false')):  # pylint: disable=protected-access
    with pytest.raises(KeyError):  # a bug, not a refused input
      _failing(KeyError('x'))(['prog'])


def test_progress_line_shows_no_rate_before_a_timed_call():
  # The first call compiles and is not timed; a whole-epoch call leaves the
  # first epoch without a rate, which must not read as 0 ex/s and no time left.
  untimed = report.progress_line(0, 50, 233, 233, 0.5, None, None)
  assert 'ex/s' not in untimed and 'ETA 0s' not in untimed and 'after the first timed call' in untimed
  timed = report.progress_line(1, 50, 20, 233, 0.5, 1000.0, 100.0)
  assert timed == 'epoch 2/50 step 20/233 loss 0.5000 1,000 ex/s ETA 1m40s'
