"""Tiny configs that keep every test fast on 2 CPU cores."""

from configs import default


# The steps per call of end-to-end runs that check outputs, resumption or
# parallel modes rather than call lengths: with one step per call a run's train
# call is also its divergence probe's program, one compile per run instead of
# two or three (auto's call lengths: tests/test_train.py, test_device_count.py).
END_TO_END_STEPS_PER_CALL = 1


def config(data_dir: str, seed: int = 0):
  c = default.get_config()
  d = c.dataset
  d.data_dir = data_dir
  d.seed = seed
  d.num_users = 60
  d.num_items = 150
  d.mean_interactions = 10
  d.image_size = 16
  c.eval.num_negatives = 40
  c.eval.repeats = 2
  c.model.embed_dim = 8
  c.model.feature_dim = 32
  c.model.encoder_width = 4
  c.model.encoder_init = ''  # random init, as before; tests/test_pretrained.py covers pretraining
  c.train.batch_size = 32
  c.train.epochs = 2
  c.eval.batch_size = 16
  return c


def pretrain_config(data_dir: str):
  """config() with a pretraining run small enough for a test: 64 glyph images, one epoch."""
  from cierec_jax import pretrain  # pylint: disable=g-import-not-at-top
  c = config(data_dir)
  c.pretrain.update(num_train=64, num_holdout=32, epochs=1, batch_size=32)
  c.model.encoder_init = pretrain.PRETRAIN
  return c
