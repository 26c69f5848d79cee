"""One error type for bad raw input, so messages always name the file and line."""

import os

MISSING = 'file not found (put the raw files in dataset.manual_dir)'


class DataError(ValueError):
  """Raw data or a dataset setting is not what preparation expects."""

  def __init__(self, message: str, path: str | None = None, line: int | None = None):
    where = ''
    if path is not None:
      where = f'{path}:{line}: ' if line is not None else f'{path}: '
    super().__init__(where + message)
    self.path = path
    self.line = line


def require_file(path: str, missing: str = MISSING):
  """Refuses a raw file that is absent or empty (0 bytes) before any parser sees it."""
  if not os.path.isfile(path):
    raise DataError(missing, path)
  if os.path.getsize(path) == 0:
    raise DataError('empty file (0 bytes)', path)


def require_id(value: str, field: str, path: str, line: int) -> str:
  """An id field, stripped; an empty id would silently become a new user or item."""
  value = value.strip()
  if not value:
    raise DataError(f'empty {field}', path, line)
  return value
