"""Backs XLA CPU's scratch memory with huge pages (Linux, glibc 2.35 or later).

XLA CPU allocates each call's scratch buffers when the call starts and frees
them when it ends: 112 MB per default CIERec step, 3.3 GB at paper scale. glibc
serves allocations that large from fresh mmaps (always, from a thread's arena,
over 64 MB) and unmaps them on free, so every call faults its scratch in again
one zeroed 4 KiB page at a time: 27,000 faults and 0.10 s of kernel time per
default step, 807,000 and 2.9 s per paper-scale step. glibc's
`glibc.malloc.hugetlb=1` asks the kernel for 2 MiB pages on those mmaps
(transparent huge pages, in the kernel's default `madvise` mode): 300-500
faults and 0.02 s per default step (step 0.30 -> 0.235 s), 1.1 s per paper-scale
step (10.3 -> 8.8 s), compile time unchanged.

glibc reads its tunables only when a process starts, so the programs
(`python -m cierec_jax.X`, `python -m experiments.X`) restart themselves once
with the tunable added, before JAX loads: the packages' `__init__` calls
`restart_if_starting_as_module`. A GLIBC_TUNABLES that already names
`glibc.malloc.hugetlb` stands (`glibc.malloc.hugetlb=0` turns this off), and
nothing restarts where the kernel's mode is `always` or `never`, or where the
C library is not glibc 2.35 or later. results.json's `devices.huge_pages`
says whether a run had them.
"""

import os
import platform
import sys
import warnings

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), None if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, ...] | None:
  library, version = platform.libc_ver()
  if library != 'glibc' or not version:
    return None
  return tuple(int(part) for part in version.split('.') if part.isdigit())


def tunables(environ) -> dict:
  """GLIBC_TUNABLES as {name: value}."""
  items = (item.partition('=') for item in environ.get('GLIBC_TUNABLES', '').split(':') if item)
  return {name: value for name, _, value in items}


def environ_with_huge_pages(environ, mode: str | None, glibc: tuple[int, ...] | None):
  """`environ` with TUNABLE=1 added to GLIBC_TUNABLES, or None when nothing
  would change: the tunable is already named there, the kernel's mode is not
  'madvise', or glibc is missing or older than MIN_GLIBC."""
  if TUNABLE in tunables(environ) or mode != 'madvise' or glibc is None or glibc < MIN_GLIBC:
    return None
  given = environ.get('GLIBC_TUNABLES', '')
  return {**environ, 'GLIBC_TUNABLES': ':'.join(filter(None, (given, f'{TUNABLE}=1')))}


def huge_pages_environ(environ=None):
  """environ_with_huge_pages for this machine (default environ: os.environ)."""
  return environ_with_huge_pages(os.environ if environ is None else environ,
                                 thp_mode(), glibc_version())


def huge_pages() -> bool:
  """Whether this process's large allocations get huge pages (results.json
  records it): glibc read GLIBC_TUNABLES from the environment the process
  started with, which /proc/self/environ keeps (os.environ may have changed)."""
  mode = thp_mode()
  if mode != 'madvise':
    return mode == 'always'
  try:
    with open('/proc/self/environ', 'rb') as f:
      started = dict(item.decode(errors='replace').partition('=')[::2]
                     for item in f.read().split(b'\0') if item)
  except OSError:
    return False
  return tunables(started).get(TUNABLE, '0') != '0'


def restart_if_starting_as_module():
  """Restarts the interpreter with huge pages while `python -m` is locating its
  module (sys.argv[0] is '-m' only then), with the same command line: a
  no-op on import by anything else (tests, notebooks, other programs)."""
  if sys.argv[:1] != ['-m']:
    return
  environ = huge_pages_environ()
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
  except OSError as e:  # runs on, with 4 KiB pages
    warnings.warn(f'could not restart with GLIBC_TUNABLES={environ["GLIBC_TUNABLES"]}: {e}')

