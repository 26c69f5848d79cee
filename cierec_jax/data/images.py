"""Image encoding for storage and decoding/normalisation for the input pipeline."""

import io
import os

import jax.numpy as jnp
import numpy as np
import PIL.Image

from cierec_jax.data.errors import DataError

# ImageNet statistics (DESIGN 4: the encoder sees ImageNet-normalised images).
MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32)
# normalize's values: [3, 256] float32, channel x uint8 value.
_NORMALIZED = (np.arange(256, dtype=np.float32)[:, None] * (1.0 / (255.0 * STDDEV_RGB)).astype(np.float32)
               - MEAN_RGB / STDDEV_RGB).T.copy()


def encode(image: np.ndarray, fmt: str = 'png') -> bytes:
  """uint8 [H, W, 3] -> PNG or JPEG bytes."""
  buf = io.BytesIO()
  PIL.Image.fromarray(image).save(buf, format=fmt.upper(), **({'quality': 95} if fmt == 'jpeg' else {}))
  return buf.getvalue()


def load_square(path: str, size: int) -> np.ndarray:
  """Reads any image file, centre-crops it square and resizes: uint8 [size, size, 3]."""
  with PIL.Image.open(path) as img:
    img = img.convert('RGB')
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), PIL.Image.BILINEAR)
    return np.asarray(img, np.uint8)


def normalize(images):
  """uint8 [..., H, W, 3] -> float32 ImageNet-normalised, same shape; numpy or
  jax arrays (inside a jitted step). A lookup in one 3 x 256 table, so that the
  host and every device give the same bits: XLA may fuse x * s - m into one
  rounding where numpy rounds twice."""
  if images.dtype != np.uint8:
    raise TypeError(f'normalize expects uint8 images, got {images.dtype} (normalised twice?)')
  if isinstance(images, np.ndarray):
    return _NORMALIZED[np.arange(3), images]
  return jnp.asarray(_NORMALIZED)[jnp.arange(3), images.astype(jnp.int32)]


def folder_source(folder: str, keys, size: int):
  """Images `<folder>/<key>.jpg` for each key.

  Returns (missing, load): missing maps the index of each key without a file
  to the reason (such items are dropped, never zero-filled); load(i) reads,
  crops and resizes item i, naming the file if it cannot be decoded.
  """
  if not os.path.isdir(folder):
    raise DataError('image folder not found', folder)
  present = set(os.listdir(folder))
  missing = {i: f'no image file {k}.jpg' for i, k in enumerate(keys) if f'{k}.jpg' not in present}

  def load(i: int) -> np.ndarray:
    path = os.path.join(folder, f'{keys[i]}.jpg')
    try:
      return load_square(path, size)
    except (OSError, ValueError) as e:
      raise DataError(f'cannot decode image: {e}', path) from e

  return missing, load
