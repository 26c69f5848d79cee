"""XLA's scratch memory on huge pages: which environment gets the tunable, the
restart of `python -m` programs, and the page faults it saves."""

import json
import os
import subprocess
import sys

import pytest

from cierec_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNABLE = 'glibc.malloc.hugetlb=1'


def _clean_environ(**extra):
  """This environment as a program started by hand has it (no GLIBC_TUNABLES,
  no restart marker), the repo importable."""
  environ = {k: v for k, v in os.environ.items()
             if k not in ('GLIBC_TUNABLES', host_memory.RESTARTED)}
  return {**environ, 'PYTHONPATH': os.pathsep.join(filter(None, (REPO, environ.get('PYTHONPATH')))),
          **extra}


def _expected_tunables():
  """What a restarted program runs with on this machine (None: no restart here)."""
  environ = host_memory.huge_pages_environ(_clean_environ())
  return None if environ is None else environ['GLIBC_TUNABLES']


def test_the_tunable_is_added_to_the_given_ones():
  marker = {host_memory.RESTARTED: '1'}
  environ = host_memory.environ_with_huge_pages(
      {'HOME': '/h', 'GLIBC_TUNABLES': 'glibc.malloc.tcache_count=10:'}, 'madvise', (2, 36))
  assert environ == {'HOME': '/h', **marker,
                     'GLIBC_TUNABLES': 'glibc.malloc.tcache_count=10:glibc.malloc.hugetlb=1'}
  assert (host_memory.environ_with_huge_pages({}, 'madvise', (2, 35))
          == {'GLIBC_TUNABLES': TUNABLE, **marker})


@pytest.mark.parametrize('environ, mode, glibc', [
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'madvise', (2, 36)),  # the user's choice stands
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=1:glibc.malloc.hugetlb=1'}, 'madvise', (2, 36)),
    # restarted once already: never again, even if glibc or a wrapper dropped the tunable
    ({host_memory.RESTARTED: '1'}, 'madvise', (2, 36)),
    ({}, 'always', (2, 36)),  # the kernel gives huge pages anyway
    ({}, 'never', (2, 36)),
    ({}, None, (2, 36)),  # no transparent huge pages (not Linux)
    ({}, 'madvise', (2, 31)),  # glibc without the tunable
    ({}, 'madvise', None),  # not glibc
])
def test_nothing_changes_where_the_tunable_would_not(environ, mode, glibc):
  assert host_memory.environ_with_huge_pages(environ, mode, glibc) is None


def test_thp_mode_is_the_bracketed_word(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert host_memory.thp_mode(str(path)) == 'madvise'
  assert host_memory.thp_mode(str(tmp_path / 'missing')) is None


@pytest.mark.parametrize('package', ['cierec_jax', 'experiments'])
def test_both_packages_restart_a_starting_program_only(package):
  """While `python -m` locates a module, sys.argv is ['-m']: importing the
  package then restarts the same command line with the tunable; a plain
  import does not."""
  show = 'import os; print(os.environ.get("GLIBC_TUNABLES"))'
  starting = subprocess.run(
      [sys.executable, '-c', f'import sys; sys.argv = ["-m"]; import {package}; {show}'],
      env=_clean_environ(), capture_output=True, text=True, check=True)
  assert starting.stdout.strip() == str(_expected_tunables())
  plain = subprocess.run([sys.executable, '-c', f'import {package}; {show}'],
                         env=_clean_environ(), capture_output=True, text=True, check=True)
  assert plain.stdout.strip() == 'None'


def test_a_module_run_with_dash_m_restarts_with_its_arguments(tmp_path):
  package = tmp_path / 'program'
  package.mkdir()
  (package / '__init__.py').write_text(
      'from cierec_jax import host_memory\nhost_memory.restart_if_starting_as_module()\n')
  environ = _clean_environ()
  environ['PYTHONPATH'] = os.pathsep.join((str(tmp_path), environ['PYTHONPATH']))
  (package / 'show.py').write_text(
      'import json, os, sys\n'
      'print(json.dumps([os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], sys.flags.optimize]))\n')
  out = subprocess.run([sys.executable, '-O', '-m', 'program.show', '--flag=1', 'word'],
                       env=environ, capture_output=True, text=True, check=True, cwd=tmp_path)
  assert json.loads(out.stdout) == [_expected_tunables(), ['--flag=1', 'word'], 1]


@pytest.mark.skipif(_expected_tunables() is None, reason='no restart on this machine')
def test_a_failed_restart_runs_on_and_says_so():
  code = ('import sys; sys.argv = ["-m"]; sys.executable = "/nonexistent/python"; '
          'import cierec_jax; print("ran on")')
  out = subprocess.run([sys.executable, '-c', code], env=_clean_environ(), capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == 'ran on'
  assert 'could not restart with GLIBC_TUNABLES=' in out.stderr and '4 KiB pages' in out.stderr


@pytest.mark.parametrize('tunables, asked', [(None, False), ('glibc.malloc.hugetlb=1', True),
                                             ('glibc.malloc.hugetlb=0', False),
                                             ('glibc.malloc.hugetlb=00', False)])
def test_huge_pages_reads_the_environment_the_process_started_with(tunables, asked):
  """What results.json records: the tunable as the process started, not as
  os.environ says later."""
  environ = _clean_environ(**({'GLIBC_TUNABLES': tunables} if tunables else {}))
  code = ('import os; from cierec_jax import host_memory; '
          'os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"; print(host_memory.huge_pages())')
  out = subprocess.run([sys.executable, '-c', code], env=environ, capture_output=True, text=True,
                       check=True)
  mode, glibc = host_memory.thp_mode(), host_memory.glibc_version()
  if mode == 'madvise' and glibc is not None and glibc >= host_memory.MIN_GLIBC:
    expected = asked
  else:
    expected = mode == 'always'
  assert out.stdout.strip() == str(expected)


_SCRATCH_FAULTS = """
import ctypes, resource
def faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before = faults()  # does the kernel hand out huge pages now? a 128 MB malloc, written once
ctypes.memset(libc.malloc(1 << 27), 1, 1 << 27)
print(faults() - before)
import jax, jax.numpy as jnp
@jax.jit
def f(i):  # a scatter into a 128 MB buffer that lives only during the call
  return jnp.zeros(1 << 25).at[i].add(1.0).sum()
i = jnp.arange(0, 1 << 25, 4096)
f(i).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(i).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(_expected_tunables() is None,
                    reason='this machine gives no huge pages through glibc (kernel mode or glibc)')
@pytest.mark.slow  # two fresh JAX processes, each compiling and running a 128 MB scatter
def test_huge_pages_save_the_page_faults_of_each_calls_scratch():
  """With 4 KiB pages each call faults its 128 MB scratch in again (32,768
  pages); with the tunable, a few hundred."""
  faults = {}
  for tunables in (None, _expected_tunables()):
    environ = _clean_environ(JAX_PLATFORMS='cpu')
    if tunables:
      environ['GLIBC_TUNABLES'] = tunables
    out = subprocess.run([sys.executable, '-c', _SCRATCH_FAULTS], env=environ,
                         capture_output=True, text=True, check=True)
    probe, faults[tunables] = map(float, out.stdout.split()[-2:])
    if tunables and probe > 20_000:  # 4 KiB pages even when asked: memory too fragmented now
      pytest.skip(f'the kernel gave no huge pages to a plain 128 MB malloc ({probe:.0f} faults)')
  assert faults[None] > 20_000, faults
  assert faults[_expected_tunables()] < faults[None] / 10, faults
  if 'PYTEST_XDIST_WORKER' in os.environ:  # conftest starts xdist's workers with the tunable
    assert host_memory.huge_pages()
