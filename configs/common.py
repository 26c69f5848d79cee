"""Fields every config shares; each config file's get_config() starts here."""

import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'synthetic'
  c.dataset.data_dir = os.environ.get('CIEREC_DATA_DIR', '~/tensorflow_datasets')
  c.dataset.manual_dir = ''
  c.dataset.seed = 0
  c.dataset.train_fraction = 0.6
  c.dataset.valid_fraction = 0.1
  # Cold users have at most this many training interactions: the paper's
  # cold/warm partition (of users; DESIGN 3.3).
  c.dataset.cold_max_train_interactions = 3
  # Cold items likewise: the item cold-start task, reported as an extra.
  c.dataset.cold_item_max_train_interactions = 3
  c.dataset.min_element_count = 1
  c.dataset.max_elements = 20
  c.dataset.preload = True  # hold every item's image/feature in host memory

  c.model = ml_collections.ConfigDict()
  # mf | vbpr | mf_image | mf_semantics | cierec | vecf | hafr | pinet | amf | amr |
  # dropoutnet | clcrec (models/registry.py)
  c.model.name = 'cierec'
  c.model.backbone = 'mf'  # mf | vbpr (cierec only)
  c.model.ci = True  # cross-modal inference: c_i and s_i
  c.model.ta = True  # task-aware gates (eq. 3, 4) instead of plain Dense
  c.model.gr = True  # gradient-regularization gates and their policies
  c.model.pi = True  # annotation tokens as privileged information (eq. 5)
  c.model.embed_dim = 64
  c.model.feature_dim = 512  # D, the encoder output
  # auto | resnet18 (pixels, end to end) | features (vectors: the dataset's own, or on an image
  # dataset pre-extracted once by the frozen encoder_init encoder, cierec_jax.features). auto:
  # 'features' on feature datasets; on image datasets 'features' for the paper's feature
  # baselines (vbpr, mf_image, cierec Base) when encoder_init is set, else 'resnet18'.
  c.model.encoder = 'auto'
  c.model.encoder_width = 64
  # ResNet18 weights the encoder starts from (and features are extracted with): '' random
  # init | a .safetensors torchvision/timm state dict or an encoder.npz | 'pretrain' (the
  # synthetic world's pretrained encoder, python -m cierec_jax.pretrain, made on demand).
  c.model.encoder_init = ''
  c.model.freeze_encoder = False  # resnet18 only: keep the encoder's weights and BatchNorm statistics fixed
  # How ResNet18 computes its convolutions and max-pool (same params; results equal up to float rounding):
  # auto (winograd on CPU, XLA's own ops on GPU/TPU) | xla | patches | winograd (models/conv_ops.py)
  c.model.conv_impl = 'auto'
  c.model.gate_activation = 'sigmoid'  # sigmoid | identity
  c.model.gr_actions = (0.2, 0.4, 0.6, 0.8, 1.0)
  # Training drops each item's annotation with this probability (models that
  # read annotations), so withheld annotations at test are not unseen input.
  c.model.annotation_dropout = 0.0
  c.model.vecf_max_regions = 100  # vecf on feature vectors: regions = the largest non-zero entries
  c.model.hafr_dropout = 0.5  # hafr: prediction-layer dropout rate (the authors' keep_prob 0.5)
  c.model.semantic_loss_weight = 1.0  # pinet: weight of the element-prediction (semantic) loss
  # AMF / AMR (APR): perturbation radius and weight of BPR at the perturbed point.
  c.model.adv_epsilon = 0.5
  c.model.adv_weight = 1.0
  # DropoutNet: probability of zeroing an item's preference input in training,
  # and the hidden widths of its user and item towers (authors' defaults).
  c.model.dropout_rate = 0.5
  c.model.tower_dims = (800, 400)
  # CLCRec: InfoNCE temperature, weight lambda of the item-content term (the
  # user-item term gets 1 - lambda), probability of replacing an item's
  # embedding by its content embedding in the user-item term.
  c.model.temperature = 1.0
  c.model.contrast_weight = 0.5
  c.model.content_sample_rate = 0.5

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  c.train.epochs = 50  # a cap: runs stop by patience (results.json: stopped_by)
  c.train.patience = 5  # stop after this many epochs without a better valid R@10; 0: never
  c.train.batch_size = 256
  c.train.lr = 0.05  # Adagrad, recommender
  c.train.adagrad_initial_accumulator = 0.0  # PyTorch's default; optax/TF use 0.1
  c.train.dqn_lr = 0.001  # Adam, policy nets
  c.train.decay_epochs = 4
  c.train.decay_rate = 0.5
  c.train.l2 = 1e-4
  # L2 on every layer's kernel (weight_l2 / 2 * |W|^2, added to the gradient before
  # Adagrad), which train.l2 never reaches: 0 (off) by default, as in the paper.
  c.train.weight_l2 = 0.0
  c.train.parallel = 'jit'  # jit | pmap
  c.train.distributed = False  # join a multi-process run (jax.distributed.initialize)
  # Process settings for distributed runs; unset ones fall back to
  # $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES / $JAX_PROCESS_ID, then to
  # JAX's detection on TPU pods, Slurm, Open MPI and Kubernetes.
  c.train.coordinator_address = ''  # host:port of process 0
  c.train.num_processes = 0  # 0: unset
  c.train.process_id = -1  # -1: unset
  # >0: cut each batch into this many fixed shards (a power of two, a multiple
  # of the device count), BatchNorm statistics per shard, gradients added in a
  # fixed order: bit-identical results on any power-of-two device count that
  # divides it. 0: one program over the whole batch (global BatchNorm
  # statistics); results then depend on the device count for image models.
  c.train.batch_shards = 0
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 0  # 0: at each epoch end only
  c.train.max_checkpoints = 2
  c.train.halt_after_steps = 0  # >0: checkpoint and stop there (simulates preemption)
  # Divergence guard: a step loss, or the probe-batch loss of a state about to be
  # checkpointed, above this stops the run (nothing bad is saved); 0: 1e3 x the
  # run's initial loss.
  c.train.max_loss = 0.0
  # A workdir whose best-valid state starts this run (parameters whose paths and
  # shapes match are copied). Empty: AMF, AMR and DropoutNet train their
  # pretrained stage in <workdir>/stage_<name> first (cierec_jax/stages.py).
  c.train.init_from = ''
  # Optimizer steps per device call (a lax.scan over stacked batches); 0: auto,
  # for image encoders 4-8 (a divisor of the epoch's steps where one exists),
  # else up to 256. Results do not depend on it (to float rounding); calls end
  # at epoch ends, checkpoints and the halt step.
  c.train.steps_per_call = 0
  # Item inputs (preloaded contents, annotation elements) up to this size stay
  # on the device and are gathered inside the step; larger ones are gathered on
  # the host per batch.
  c.train.device_items_max_mb = 1024

  # Adagrad learning rate per Table II model, chosen on valid R@10 by
  # experiments/tune.py (the same budget for every model: the grid is extended until
  # its best value is inside it); used by the experiment scripts (table2/table3/fig3),
  # not by a plain main.py run.
  models = ('mf', 'vbpr', 'mf_image', 'mf_semantics', 'cierec_mf', 'cierec_vbpr',
            'vecf', 'hafr', 'pinet', 'dropoutnet', 'amf', 'amr', 'clcrec')
  c.tuned_lr = ml_collections.ConfigDict({k: c.train.lr for k in models})
  # train.weight_l2 per Table II model, chosen by the same script at the chosen rate.
  c.tuned_weight_l2 = ml_collections.ConfigDict({k: c.train.weight_l2 for k in models})

  c.eval = ml_collections.ConfigDict()
  c.eval.num_negatives = 500
  c.eval.repeats = 5
  c.eval.ks = (10, 20)
  c.eval.annotations = True
  c.eval.dump = False
  c.eval.batch_size = 32  # users per scoring call
  c.eval.encode_batch_size = 256  # items per encoder call
  c.eval.every_epochs = 1
  return c
