"""Artifacts made once and reused (the pretrained encoder, feature tables), like a dataset."""

import hashlib
import json
import os
import shutil

INFO = 'info.json'


def build_once(path: str, build) -> tuple[bool, dict]:
  """Unless the folder `path` exists, calls build(tmp) on a fresh sibling folder,
  writes the dict it returns to info.json there and renames the folder to
  `path`, so an interrupted build is never read as finished.
  Returns (whether it built, the info dict)."""
  built = not os.path.isdir(path)
  if built:
    _build(path, build)
  with open(os.path.join(path, INFO)) as f:
    return built, json.load(f)


def _build(path: str, build):
  tmp = f'{path}.incomplete{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    info = build(tmp)
    with open(os.path.join(tmp, INFO), 'w') as f:
      json.dump(info, f, indent=1)
    try:
      os.replace(tmp, path)
    except OSError:
      if not os.path.isdir(path):
        raise  # else another process finished it first: theirs is used
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def file_sha1(path: str) -> str:
  h = hashlib.sha1()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()
