"""One error type for bad raw input, so messages always name the file and line."""


class DataError(ValueError):
  """Raw data or a dataset setting is not what preparation expects."""

  def __init__(self, message: str, path: str | None = None, line: int | None = None):
    where = ''
    if path is not None:
      where = f'{path}:{line}: ' if line is not None else f'{path}: '
    super().__init__(where + message)
    self.path = path
    self.line = line
