"""Allrecipes (Gao et al.), read from dataset.manual_dir; official splits."""

from configs import common


def get_config():
  c = common.base_config()
  d = c.dataset
  d.name = 'allrecipes'
  d.image_size = 224
  d.min_element_count = 1
  d.preload = False
  return c
