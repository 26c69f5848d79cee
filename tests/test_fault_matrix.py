"""Each probe of experiments/fault_matrix.py gives the refusal (or the outcome) it documents."""

import pytest

from experiments import fault_matrix


@pytest.mark.parametrize('probe', [
    pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.trains else [])
    for p in fault_matrix.PROBES])
def test_probe(probe, tmp_path, capsys):
  result = fault_matrix.outcome(probe, str(tmp_path))
  assert fault_matrix.as_expected(probe, result), result
  if probe.name.startswith('workdir and data dir left'):
    assert 'taking over the stale lock' in capsys.readouterr().err
