"""Amazon CDs & Vinyl (McAuley), read from dataset.manual_dir."""

from configs import common


def get_config():
  c = common.base_config()
  d = c.dataset
  d.name = 'amazon_cds'
  d.variant = 'images'  # images: <manual_dir>/images/<asin>.jpg | features: the .b file
  d.image_size = 224
  d.min_element_count = 1
  d.preload = False
  return c
