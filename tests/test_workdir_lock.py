"""The workdir lock: one holder, refused at once with its pid/host, stale locks taken over."""

import json
import os
import socket
import threading
import time

import pytest

from cierec_jax import workdir_lock
from experiments import fault_matrix


def test_held_writes_the_holder_and_releases(tmp_path):
  with workdir_lock.held(str(tmp_path / 'run')) as path:
    holder = workdir_lock.read_holder(path)
    assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
  assert not os.path.exists(path)


def test_busy_folder_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path / 'run')
  with fault_matrix.lock_held_elsewhere(workdir) as pid:
    with pytest.raises(workdir_lock.WorkdirBusy,
                       match=rf'{workdir} is in use by pid {pid} on host {socket.gethostname()} since .*'
                             rf'remove {workdir}/run.lock'):
      with workdir_lock.held(workdir):
        pass
    assert workdir_lock.read_holder(os.path.join(workdir, 'run.lock'))['pid'] == pid


def _write_lock(path, pid, host):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'pid': pid, 'host': host, 'started': time.time()}, f)


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
  path = str(tmp_path / 'run' / 'run.lock')
  dead = fault_matrix.dead_pid()
  _write_lock(path, dead, socket.gethostname())
  with workdir_lock.held(str(tmp_path / 'run')):
    assert workdir_lock.read_holder(path)['pid'] == os.getpid()
  assert f'taking over the stale lock {path} of pid {dead}' in capsys.readouterr().err


def test_lock_of_another_host_is_not_guessed_stale(tmp_path):
  path = str(tmp_path / 'run' / 'run.lock')
  _write_lock(path, fault_matrix.dead_pid(), 'some-other-host')
  with pytest.raises(workdir_lock.WorkdirBusy, match='on host some-other-host'):
    workdir_lock.acquire(path, 'run')


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
  path = str(tmp_path / 'run.lock')
  _write_lock(path, os.getpid() + 1, socket.gethostname())
  workdir_lock.release(path)
  assert os.path.exists(path)


def test_wait_mode_waits_for_the_holder(tmp_path, capsys):
  path = str(tmp_path / 'prepare.lock')
  workdir_lock.acquire(path, 'x')
  threading.Timer(0.3, workdir_lock.release, [path]).start()
  start = time.time()
  workdir_lock.acquire(path, 'preparation of x', wait=True, poll_seconds=0.05)
  assert time.time() - start >= 0.25
  assert 'waiting for preparation of x, in use by pid' in capsys.readouterr().err
  workdir_lock.release(path)


def test_run_lock_is_refused_by_every_process_when_one_is_refused(tmp_path, monkeypatch):
  from cierec_jax import parallel, train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  with train.run_lock(workdir):
    assert os.path.exists(os.path.join(workdir, 'run.lock'))
  # This process got its lock, another process of the run did not: this one stops too.
  monkeypatch.setattr(parallel, 'failed_processes', lambda failed: [1])
  with pytest.raises(workdir_lock.WorkdirBusy, match=r'processes \[1\] of this run'):
    with train.run_lock(workdir):
      pass
  assert not os.path.exists(os.path.join(workdir, 'run.lock'))  # released on the way out
