"""The embedded synthetic dataset (DESIGN 3.2), generated from a seed, offline.

Each element is a glyph (shape x colour). An item's image draws its elements'
glyphs at random places over a noisy background, and its annotation names the
same elements. Users like a few elements and also have latent collaborative
tastes; item popularity is long-tailed, so many items are cold. Content then
predicts preference, and a model that reads elements from images can rank
cold items that pure MF cannot.
"""

import numpy as np
import PIL.Image
import PIL.ImageDraw

from cierec_jax.data import builder
from cierec_jax.data import raw as raw_lib

SHAPES = ('circle', 'square', 'triangle', 'cross', 'diamond', 'ring', 'hbar', 'vbar')
COLOURS = {'red': (230, 40, 40), 'green': (40, 200, 60), 'blue': (50, 90, 240),
           'yellow': (235, 220, 40), 'magenta': (220, 50, 220), 'cyan': (40, 220, 220),
           'orange': (245, 140, 20), 'white': (245, 245, 245)}

DEFAULTS = dict(
    num_users=800, num_items=1200, num_shapes=4, num_colours=6, min_elements_per_item=1,
    max_elements_per_item=3, liked_elements=3, mean_interactions=15, min_interactions=5,
    popularity_exponent=0.6, content_weight=4.0, collab_weight=1.0, latent_dim=8,
    image_size=32, noise=12.0)


def element_names(num_shapes: int, num_colours: int) -> list[str]:
  if not (1 <= num_shapes <= len(SHAPES) and 1 <= num_colours <= len(COLOURS)):
    raise ValueError(f'dataset.num_shapes must be in 1..{len(SHAPES)} and '
                     f'dataset.num_colours in 1..{len(COLOURS)}')
  return [f'{c}_{s}' for s in SHAPES[:num_shapes] for c in list(COLOURS)[:num_colours]]


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


def render(elements: list[tuple[str, str]], size: int, rng: np.random.Generator, noise: float) -> np.ndarray:
  """uint8 [size, size, 3]: the glyphs at random places over Gaussian noise."""
  img = PIL.Image.new('RGB', (size, size), (40, 40, 40))
  draw = PIL.ImageDraw.Draw(img)
  r = size / 7.0
  for shape, colour in elements:
    x, y = rng.uniform(r, size - r, size=2)
    jitter = rng.integers(-20, 21, size=3)
    draw_glyph(draw, shape, tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255)), x, y, r)
  arr = np.asarray(img, np.float32) + rng.normal(0.0, noise, size=(size, size, 3))
  return np.clip(arr, 0, 255).astype(np.uint8)


def generate(settings: dict) -> raw_lib.RawData:
  """Builds items, users and interactions from settings (DEFAULTS + overrides)."""
  p = {**DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS}}
  seed = int(settings['seed'])
  rng = np.random.default_rng([seed, 0])
  names = element_names(p['num_shapes'], p['num_colours'])
  num_e, num_i, num_u = len(names), p['num_items'], p['num_users']

  # Items: a few distinct elements each, long-tailed popularity.
  n_el = rng.integers(p['min_elements_per_item'], p['max_elements_per_item'] + 1, size=num_i)
  item_el = [rng.choice(num_e, size=min(k, num_e), replace=False) for k in n_el]
  membership = np.zeros((num_i, num_e), np.float32)
  for i, els in enumerate(item_el):
    membership[i, els] = 1.0 / np.sqrt(len(els))
  log_pop = -p['popularity_exponent'] * np.log1p(rng.permutation(num_i).astype(np.float64))

  # Users: liked elements plus latent collaborative tastes.
  taste = rng.normal(0.0, 0.3, size=(num_u, num_e))
  for u in range(num_u):
    taste[u, rng.choice(num_e, size=min(p['liked_elements'], num_e), replace=False)] += 1.0
  k = p['latent_dim']
  x_u = rng.normal(0.0, 1.0 / np.sqrt(k), size=(num_u, k))
  y_i = rng.normal(0.0, 1.0, size=(num_i, k))
  utility = (p['content_weight'] * taste @ membership.T + p['collab_weight'] * x_u @ y_i.T
             + log_pop[None, :])

  # Each user picks n_u distinct items by Gumbel-top-k on the utility.
  n_u = np.maximum(p['min_interactions'], rng.geometric(1.0 / p['mean_interactions'], size=num_u))
  n_u = np.minimum(n_u, num_i // 2)
  users, items = [], []
  for u in range(num_u):
    g = utility[u] + rng.gumbel(size=num_i)
    chosen = np.argpartition(-g, n_u[u])[:n_u[u]]
    users.append(np.full(n_u[u], u))
    items.append(chosen)
  inter_user = np.concatenate(users).astype(np.int64)
  inter_item = np.concatenate(items).astype(np.int64)
  inter_time = rng.uniform(1.0e9, 1.1e9, size=len(inter_user)).round()

  size, noise = p['image_size'], p['noise']
  glyphs = [(s, c) for s in SHAPES[:p['num_shapes']] for c in list(COLOURS)[:p['num_colours']]]

  def load_source(i: int) -> np.ndarray:
    return render([glyphs[e] for e in item_el[i]], size, np.random.default_rng([seed, 1, i]), noise)

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
