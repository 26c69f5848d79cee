"""The embedded synthetic dataset: runs offline in minutes on a CPU."""

import ml_collections

from configs import common


def get_config():
  c = common.base_config()
  d = c.dataset
  d.name = 'synthetic'
  d.num_users = 800
  d.num_items = 1200
  d.num_shapes = 4
  d.num_colours = 6
  d.min_elements_per_item = 1
  d.max_elements_per_item = 3
  d.liked_elements = 3
  d.mean_interactions = 15
  d.min_interactions = 5
  d.popularity_exponent = 0.6
  d.content_weight = 4.0
  d.collab_weight = 1.0
  d.latent_dim = 8
  d.image_size = 32
  d.noise = 12.0
  c.model.encoder_width = 16
  c.model.encoder_init = 'pretrain'  # the glyph corpus below, as ImageNet is for real images
  # The synthetic world's ImageNet (python -m cierec_jax.pretrain): glyph images from their own
  # rng stream over all 8 shapes and 8 colours, labelled with the shapes present and the glyph
  # count (not the colours), rendered at dataset.image_size with dataset.noise.
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.seed = 0
  c.pretrain.num_train = 20000  # training images
  c.pretrain.num_holdout = 2000  # held-out images, for the reported accuracy
  c.pretrain.max_glyphs = 4  # 1..max_glyphs glyphs per image (the dataset draws 1..3)
  c.pretrain.epochs = 4
  c.pretrain.batch_size = 64
  c.pretrain.lr = 0.002  # Adam, cosine-decayed to 0 over the run
  # python -m experiments.tune --config=configs/default.py --workdir=runs/synthetic: the
  # learning rate, then train.weight_l2 at it, each grid extended past its edges, early
  # stopping, seed 0 (experiments/results/synthetic/tune.md).
  c.tuned_lr.update(dict(mf=0.01, vbpr=0.01, mf_image=0.1, mf_semantics=0.2, vecf=0.05, hafr=0.01,
                         pinet=0.01, dropoutnet=0.0005, amf=0.002, amr=0.02, clcrec=0.1,
                         cierec_mf=0.05, cierec_vbpr=0.02))
  c.tuned_weight_l2.update(dict(mf=0, vbpr=10, mf_image=0.01, mf_semantics=0, vecf=1, hafr=0.01,
                                pinet=0, dropoutnet=0, amf=0, amr=0.01, clcrec=0, cierec_mf=0,
                                cierec_vbpr=0))
  return c
