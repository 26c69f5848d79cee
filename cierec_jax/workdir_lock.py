"""One writer per folder: a lock file naming its holder (pid, host, start time).

The file is created with its content in one step (a hard link of a written
temporary file), so a reader never sees it half-written. A lock whose holder
is a process of this host that no longer exists (killed, crashed) is stale:
it is taken over with a warning (a recycled pid keeps it held: the error
says which file to remove). A holder on another host cannot be checked either.
"""

import contextlib
import json
import os
import socket
import sys
import time


class WorkdirBusy(RuntimeError):
  """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def read_holder(path: str) -> dict | None:
  try:
    with open(path) as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # unreadable: no pid to check


def is_stale(holder: dict) -> bool:
  """True when the holder was a process of this host that has ended."""
  pid = holder.get('pid')
  return (holder.get('host') == socket.gethostname() and isinstance(pid, int)
          and not _alive(pid))


def describe(holder: dict) -> str:
  started = holder.get('started')
  since = time.strftime(' since %Y-%m-%d %H:%M:%S', time.localtime(started)) if started else ''
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


def _create(path: str) -> bool:
  """Writes our lock at path unless a lock is there; True when created."""
  me = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time()}
  tmp = f'{path}.{me["pid"]}.tmp'
  with open(tmp, 'w') as f:
    json.dump(me, f)
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  except OSError:  # no hard links on this file system: exclusive create, then write
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    return True
  finally:
    os.remove(tmp)


def acquire(path: str, what: str, wait: bool = False, poll_seconds: float = 1.0):
  """Takes the lock at path, or raises WorkdirBusy (wait=False) / waits for it.

  what: the guarded thing, for messages (e.g. 'workdir runs/x').
  """
  waiting = False
  while not _create(path):
    holder = read_holder(path)
    if holder is None:  # released meanwhile
      continue
    if is_stale(holder):
      print(f'warning: taking over the stale lock {path} of {describe(holder)} '
            '(that process has ended)', file=sys.stderr, flush=True)
      # Removed only if it still names that holder (another process may have taken it over).
      if read_holder(path) == holder:
        os.remove(path)
      continue
    if not wait:
      raise WorkdirBusy(f'{what} is in use by {describe(holder)}; wait for that run to end or use '
                        f'another folder (if that process is gone, remove {path})')
    if not waiting:
      print(f'waiting for {what}, in use by {describe(holder)}', file=sys.stderr, flush=True)
      waiting = True
    time.sleep(poll_seconds)


def release(path: str):
  """Removes the lock if it is still ours."""
  holder = read_holder(path)
  if holder and holder.get('pid') == os.getpid() and holder.get('host') == socket.gethostname():
    os.remove(path)


@contextlib.contextmanager
def held(directory: str, name: str = 'run.lock', what: str | None = None, wait: bool = False):
  """Holds directory/name for the duration of the block (see acquire)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, name)
  acquire(path, what or directory, wait)
  try:
    yield path
  finally:
    release(path)
