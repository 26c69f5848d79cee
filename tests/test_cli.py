"""Refused inputs reach the user as one line and status 1; --verbose keeps the traceback."""

from absl.testing import flagsaver
import pytest

from cierec_jax import cli
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
