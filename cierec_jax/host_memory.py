"""Backs XLA CPU's scratch memory with huge pages (Linux, glibc 2.35 or later).

XLA CPU allocates a call's scratch buffers when the call starts and frees them
when it ends: 112 MB per default CIERec step, about 3.3 GB at paper scale. Its
threads allocate them, and glibc serves a thread's allocations over 64 MB from
a fresh mmap and unmaps it on free, so every call faulted its scratch in again,
one zeroed 4 KiB page at a time (27,400 faults and 0.10 s of kernel time per
default step). glibc's `glibc.malloc.hugetlb=1` has malloc's mmaps ask for
transparent huge pages in the kernel's `madvise` mode (Debian's and Ubuntu's
default): 320-480 faults and 0.02-0.03 s per default step, compile time
unchanged (README, Speed: "XLA's scratch memory on huge pages").

glibc reads its tunables only when a process starts, so the programs
(`python -m cierec_jax.X`, `python -m experiments.X`) restart themselves once,
before JAX loads, with the tunable added: the packages' `__init__` calls
`restart_if_starting_as_module`. Nothing restarts where GLIBC_TUNABLES already
names the tunable (`glibc.malloc.hugetlb=0` turns this off), where the
kernel's mode is not `madvise` (`always` gives huge pages anyway), or where
the C library is not glibc 2.35 or later.
"""

import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb
# Set in the restarted process: a second restart never follows, even where glibc
# or a wrapper drops GLIBC_TUNABLES (a secure-mode process, a cleared environment).
RESTARTED = 'CIEREC_JAX_HUGE_PAGES_RESTARTED'


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


def _reads_the_tunable(glibc: tuple[int, ...] | None) -> bool:
  return glibc is not None and glibc >= MIN_GLIBC


def tunables(environ) -> dict:
  """GLIBC_TUNABLES as {name: value}."""
  items = (item.partition('=') for item in environ.get('GLIBC_TUNABLES', '').split(':') if item)
  return {name.strip(): value.strip() for name, _, value in items}


def environ_with_huge_pages(environ, mode: str | None, glibc: tuple[int, ...] | None):
  """`environ` with TUNABLE=1 added to GLIBC_TUNABLES (and RESTARTED set), or
  None when nothing would change: the tunable is already named there, this
  process is the restarted one, the kernel's mode is not 'madvise', or glibc
  is missing or older than MIN_GLIBC."""
  if (TUNABLE in tunables(environ) or RESTARTED in environ or mode != 'madvise'
      or not _reads_the_tunable(glibc)):
    return None
  given = environ.get('GLIBC_TUNABLES', '').rstrip(':')
  return {**environ, RESTARTED: '1',
          'GLIBC_TUNABLES': ':'.join(filter(None, (given, f'{TUNABLE}=1')))}


def huge_pages_environ(environ=None):
  """environ_with_huge_pages for this machine (default environ: os.environ)."""
  mode = thp_mode()
  if mode != 'madvise':  # before glibc_version, which reads the whole binary off glibc
    return None
  return environ_with_huge_pages(os.environ if environ is None else environ, mode, glibc_version())


def _asks_for_huge_pages(environ) -> bool:
  try:
    return int(tunables(environ).get(TUNABLE, '0'), 0) == 1
  except ValueError:
    return False


def huge_pages() -> bool:
  """Whether this process's large allocations may get transparent huge pages:
  the kernel's mode is 'always', or 'madvise' with the tunable at 1 in the
  environment the process started with (glibc read it then; /proc/self/environ
  keeps it, os.environ may have changed since). Asked for, not counted: a
  kernel short of free 2 MiB blocks hands out 4 KiB pages."""
  mode = thp_mode()
  if mode != 'madvise':
    return mode == 'always'
  if not _reads_the_tunable(glibc_version()):
    return False
  try:
    with open('/proc/self/environ', 'rb') as f:
      started = dict(item.decode(errors='replace').partition('=')[::2]
                     for item in f.read().split(b'\0') if item)
  except OSError:
    return False
  return _asks_for_huge_pages(started)


def restart_if_starting_as_module():
  """Restarts the interpreter with huge pages while `python -m` is locating its
  module (sys.argv[0] is '-m' only then), with the same command line: a
  no-op on import by anything else (tests, notebooks, other programs). If the
  restart fails, the program runs on with 4 KiB pages and says so."""
  if sys.argv[:1] != ['-m'] or not sys.executable:
    return
  environ = huge_pages_environ()
  if environ is None:
    return
  for stream in (sys.stdout, sys.stderr):
    if stream is not None:
      stream.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
  except (OSError, ValueError) as e:
    if sys.stderr is not None:
      print(f'note: could not restart with GLIBC_TUNABLES={environ["GLIBC_TUNABLES"]} '
            f'({e}); running with 4 KiB pages', file=sys.stderr)
