"""The model registry: every name builds, unknown names are refused by name."""

import pytest

from cierec_jax.models import registry
from tests import model_helpers as mh


def test_every_registered_name_builds_a_model_with_a_spec():
  for name in registry.names():
    model = mh.make(name=name)
    assert model.spec.name == name


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"model.name='knn': expected one of \('mf'"):
    mh.make(name='knn')


def test_reads_annotations():
  assert mh.make(name='cierec').spec.reads_annotations
  assert mh.make(name='mf_semantics').spec.reads_annotations
  assert not mh.make(name='cierec', pi=False).spec.reads_annotations
  assert not mh.make(name='vbpr').spec.reads_annotations
