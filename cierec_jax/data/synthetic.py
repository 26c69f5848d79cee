"""The embedded synthetic dataset (DESIGN 3.2), generated from a seed, offline.

Each element is a glyph (shape x colour, and x size when `num_sizes` > 1).
An item's image draws its elements' glyphs at random places over a noisy
background, and its annotation names the same elements. Users like a few
elements and also have latent collaborative tastes; item popularity is
long-tailed, so many items are cold. Content then predicts preference, and a
model that reads elements from images can rank cold items that pure MF cannot.

Users' utilities are computed per block of users (the users x items matrix
of a paper-scale dataset would not fit in memory), with the same random draws
in the same order as one whole matrix.
"""

import colorsys

import numpy as np
import PIL.Image
import PIL.ImageDraw
import scipy.sparse

from cierec_jax.data import builder
from cierec_jax.data import raw as raw_lib

SHAPES = ('circle', 'square', 'triangle', 'cross', 'diamond', 'ring', 'hbar', 'vbar')
COLOURS = {'red': (230, 40, 40), 'green': (40, 200, 60), 'blue': (50, 90, 240),
           'yellow': (235, 220, 40), 'magenta': (220, 50, 220), 'cyan': (40, 220, 220),
           'orange': (245, 140, 20), 'white': (245, 245, 245)}

MAX_COLOURS = 256  # the named colours, then generated hues
USER_BLOCK = 512  # users whose utilities are computed at once

DEFAULTS = dict(
    num_users=800, num_items=1200, num_shapes=4, num_colours=6, num_sizes=1,
    min_elements_per_item=1, max_elements_per_item=3, liked_elements=3, mean_interactions=15,
    min_interactions=5, popularity_exponent=0.6, content_weight=4.0, collab_weight=1.0,
    latent_dim=8, image_size=32, noise=12.0)


def palette(num_colours: int) -> dict:
  """name -> RGB: the named COLOURS first, then hues spread by the golden ratio."""
  out = dict(list(COLOURS.items())[:num_colours])
  for k in range(len(out), num_colours):
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.55 + 0.4 * (k % 2), 0.65 + 0.3 * (k % 3 == 0))
    out[f'c{k:03d}'] = (int(255 * r), int(255 * g), int(255 * b))
  return out


def glyph_scales(num_sizes: int) -> list:
  """Glyph radius multipliers, one per size variant (1.0 alone for one size)."""
  return [1.0] if num_sizes == 1 else [float(x) for x in np.linspace(0.6, 1.4, num_sizes)]


def glyphs(num_shapes: int, num_colours: int, num_sizes: int = 1) -> list:
  """Every element as (name, shape, RGB, radius multiplier), in element order."""
  if not (1 <= num_shapes <= len(SHAPES) and 1 <= num_colours <= MAX_COLOURS and num_sizes >= 1):
    raise ValueError(f'dataset.num_shapes must be in 1..{len(SHAPES)}, dataset.num_colours in '
                     f'1..{MAX_COLOURS} and dataset.num_sizes >= 1')
  colours, scales = palette(num_colours), glyph_scales(num_sizes)
  return [(f'{c}_{s}' if num_sizes == 1 else f'{c}_{s}_x{k}', s, rgb, scale)
          for s in SHAPES[:num_shapes] for c, rgb in colours.items() for k, scale in enumerate(scales)]


def element_names(num_shapes: int, num_colours: int, num_sizes: int = 1) -> list[str]:
  return [g[0] for g in glyphs(num_shapes, num_colours, num_sizes)]


def draw_glyph(draw: PIL.ImageDraw.ImageDraw, shape: str, colour, x: float, y: float, r: float):
  box = (x - r, y - r, x + r, y + r)
  w = max(1, int(round(r / 2.5)))
  if shape == 'circle':
    draw.ellipse(box, fill=colour)
  elif shape == 'square':
    draw.rectangle(box, fill=colour)
  elif shape == 'triangle':
    draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
  elif shape == 'cross':
    draw.line([(x - r, y), (x + r, y)], fill=colour, width=w)
    draw.line([(x, y - r), (x, y + r)], fill=colour, width=w)
  elif shape == 'diamond':
    draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=colour)
  elif shape == 'ring':
    draw.ellipse(box, outline=colour, width=w)
  elif shape == 'hbar':
    draw.rectangle((x - r, y - r / 3, x + r, y + r / 3), fill=colour)
  elif shape == 'vbar':
    draw.rectangle((x - r / 3, y - r, x + r / 3, y + r), fill=colour)


def render(elements: list[tuple], size: int, rng: np.random.Generator, noise: float) -> np.ndarray:
  """uint8 [size, size, 3]: the glyphs (shape, RGB, radius multiplier) at
  random places over Gaussian noise."""
  img = PIL.Image.new('RGB', (size, size), (40, 40, 40))
  draw = PIL.ImageDraw.Draw(img)
  for shape, rgb, scale in elements:
    r = size / 7.0 * scale
    x, y = rng.uniform(r, size - r, size=2)
    jitter = rng.integers(-20, 21, size=3)
    draw_glyph(draw, shape, tuple(int(v) for v in np.clip(np.array(rgb) + jitter, 0, 255)), x, y, r)
  arr = np.asarray(img, np.float32) + rng.normal(0.0, noise, size=(size, size, 3))
  return np.clip(arr, 0, 255).astype(np.uint8)


def generate(settings: dict) -> raw_lib.RawData:
  """Builds items, users and interactions from settings (DEFAULTS + overrides)."""
  p = {**DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS}}
  seed = int(settings['seed'])
  rng = np.random.default_rng([seed, 0])
  elements = glyphs(p['num_shapes'], p['num_colours'], p['num_sizes'])
  names = [e[0] for e in elements]
  num_e, num_i, num_u = len(names), p['num_items'], p['num_users']

  # Items: a few distinct elements each, long-tailed popularity.
  n_el = rng.integers(p['min_elements_per_item'], p['max_elements_per_item'] + 1, size=num_i)
  item_el = [rng.choice(num_e, size=min(k, num_e), replace=False) for k in n_el]
  lengths = np.array([len(els) for els in item_el])
  # [I, E] sparse; weights rounded to float32 as a dense float32 matrix would hold them.
  weights = (1.0 / np.sqrt(lengths)).astype(np.float32).astype(np.float64)
  membership = scipy.sparse.csr_matrix(
      (np.repeat(weights, lengths), np.concatenate(item_el), np.concatenate([[0], np.cumsum(lengths)])),
      shape=(num_i, num_e))
  log_pop = -p['popularity_exponent'] * np.log1p(rng.permutation(num_i).astype(np.float64))

  # Users: liked elements plus latent collaborative tastes.
  taste = rng.normal(0.0, 0.3, size=(num_u, num_e))
  for u in range(num_u):
    taste[u, rng.choice(num_e, size=min(p['liked_elements'], num_e), replace=False)] += 1.0
  k = p['latent_dim']
  x_u = rng.normal(0.0, 1.0 / np.sqrt(k), size=(num_u, k))
  y_i = rng.normal(0.0, 1.0, size=(num_i, k))

  # Each user picks n_u distinct items by Gumbel-top-k on the utility
  # content_weight * taste . membership + collab_weight * x_u . y_i + log popularity.
  n_u = np.maximum(p['min_interactions'], rng.geometric(1.0 / p['mean_interactions'], size=num_u))
  n_u = np.minimum(n_u, num_i // 2)
  users, items = [], []
  for a in range(0, num_u, USER_BLOCK):
    block = np.arange(a, min(num_u, a + USER_BLOCK))
    content = (membership @ (p['content_weight'] * taste[block]).T).T
    utility = content + (p['collab_weight'] * x_u[block]) @ y_i.T + log_pop[None, :]
    g = utility + rng.gumbel(size=(len(block), num_i))  # the same draws as one per user
    for row, u in enumerate(block):
      users.append(np.full(n_u[u], u))
      items.append(np.argpartition(-g[row], n_u[u])[:n_u[u]].copy())  # not a view of all items
  inter_user = np.concatenate(users).astype(np.int64)
  inter_item = np.concatenate(items).astype(np.int64)
  inter_time = rng.uniform(1.0e9, 1.1e9, size=len(inter_user)).round()

  size, noise = p['image_size'], p['noise']

  def load_source(i: int) -> np.ndarray:
    return render([elements[e][1:] for e in item_el[i]], size, np.random.default_rng([seed, 1, i]),
                  noise)

  return raw_lib.RawData(
      modality=raw_lib.IMAGE, item_keys=[f'item{i}' for i in range(num_i)],
      item_elements=[[names[e] for e in els] for els in item_el], missing_source={},
      load_source=load_source, source_shape=(size, size, 3),
      user_keys=[f'user{u}' for u in range(num_u)], inter_user=inter_user,
      inter_item=inter_item, inter_time=inter_time)


class CierecSynthetic(builder.RecBuilder):
  """Synthetic glyph images with element annotations (DESIGN 3.2)."""

  def read_raw(self, settings, manual_dir):
    del manual_dir
    return generate(settings)
