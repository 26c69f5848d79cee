"""The synthetic generator at the paper's Table I size (Allrecipes: 68,768 users,
45,630 items, 1,093,845 interactions, 2,736 ingredients), with 32x32 images.

  python -m experiments.bench_scale   # preparation, training and evaluation at this size
"""

from configs import default


def get_config():
  c = default.get_config()
  d = c.dataset
  d.num_users = 68_768
  d.num_items = 45_630
  # 8 shapes x 57 colours x 6 glyph sizes = 2,736 elements (the paper's ingredients).
  d.num_shapes = 8
  d.num_colours = 57  # the 8 named colours, then generated hues
  d.num_sizes = 6  # glyph radius variants, 0.6x to 1.4x
  d.min_elements_per_item = 2
  d.max_elements_per_item = 5
  d.liked_elements = 20  # of 2,736: enough that many items carry a liked element
  d.mean_interactions = 15  # about 15.9 per user after the minimum of 5, as Allrecipes
  d.preload = True  # 45,630 images of 32x32x3 bytes: 140 MB
  return c
