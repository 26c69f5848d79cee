"""MovieLens-100K from the recbole==1.2.1 wheel; knowledge-graph features, genre annotations."""

from configs import common


def get_config():
  c = common.base_config()
  d = c.dataset
  d.name = 'movielens100k'
  d.min_entity_items = 5  # keep KG entities linked to at least this many items
  d.min_element_count = 1
  return c
