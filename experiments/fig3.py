"""The paper's Fig. 3: t-SNE of 5 random users and the items they interacted with.

  python -m experiments.fig3 --config=configs/default.py --workdir=runs/paper

Trains (or reuses, from table2/table3 in the same --workdir) Base, Base+CI
and the full CIERec(MF), then embeds, for each model's best-valid state, its
user vectors p_u and fused item representations f_i (as that user
sees them: v_i is user-conditioned) with scikit-learn's t-SNE. Each user is a
star; each user's items share its colour. Writes fig3.png.
"""

import os

from absl import app
from absl import flags
import numpy as np
from ml_collections import config_flags
from sklearn.manifold import TSNE

from cierec_jax import checkpoint as ckpt_lib
from cierec_jax import evaluate as eval_lib
from cierec_jax import features
from cierec_jax import train
from cierec_jax.data import load
from experiments import grid
from experiments import paper_rows

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Dataset config.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/paper', 'Root of the runs and the figure.')
_USERS = flags.DEFINE_integer('users', 5, 'Random users to show.')
_SEED = flags.DEFINE_integer('seed', 0, 'Picks the users.')
_QUICK = flags.DEFINE_bool('quick', False, 'One epoch per model: a smoke run.')

PANELS = ('Base', 'Base+CI', 'Base+CI+TA+GR+PI')


def representations(config, workdir, users, items_of):
  """(p [n_users, d], f [n_items, d], owner [n_items]) from a run's best-valid state."""
  data = load.load(config)
  model = train.build_model(config, data)
  data = features.for_model(config, data, model.spec)
  mgr = ckpt_lib.Checkpointer(workdir, 1, 'best')
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = mgr.manager.restore(mgr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']
  mgr.close()
  variables = {'params': state['params']}
  if state.get('batch_stats'):
    variables['batch_stats'] = state['batch_stats']
  table = eval_lib.Evaluator(model, data, config.eval).item_table(variables)
  width = max(len(items_of[u]) for u in users)
  cands = np.stack([np.resize(items_of[u], width) for u in users])
  f = model.apply(variables, np.asarray(users), cands, table, method='fused_candidates')
  p = model.apply(variables, np.asarray(users), method='users')['p']
  f, owner = np.concatenate([np.asarray(f[k, :len(items_of[u])]) for k, u in enumerate(users)]), \
      np.concatenate([np.full(len(items_of[u]), k) for k, u in enumerate(users)])
  return np.asarray(p), f, owner


def main(_):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  panels = [(label, run) for _, label, run in paper_rows.ablation_runs(config, 1, backbones=('mf',))
            if label in PANELS]
  results = grid.run_grid(config, [run for _, run in panels], _WORKDIR.value, quick=_QUICK.value)
  lost = [run.workdir(_WORKDIR.value) for _, run in panels if grid.diverged(results[run])]
  if lost:
    raise SystemExit(f'fig3 draws from the runs {lost}, which diverged: see their diverged.json')
  data = load.load(config)
  rng = np.random.default_rng(_SEED.value)
  users = sorted(rng.choice(data.num_users, size=_USERS.value, replace=False).tolist())
  items_of = {u: data.user_items[data.user_indptr[u]:data.user_indptr[u + 1]] for u in users}
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
  colours = plt.get_cmap('tab10')
  for ax, (title, run) in zip(np.atleast_1d(axes), panels):
    c = grid.apply(config, run.overrides)
    p, f, owner = representations(c, run.workdir(_WORKDIR.value), users, items_of)
    points = np.concatenate([p, f])
    # Scores are inner products, so a user relates to its items by direction:
    # cosine distances keep a user near the items it scores high.
    xy = TSNE(n_components=2, perplexity=min(30.0, len(points) - 1), init='pca', metric='cosine',
              random_state=_SEED.value).fit_transform(points)
    for k in range(len(users)):
      mine = xy[len(users):][owner == k]
      ax.scatter(mine[:, 0], mine[:, 1], s=14, color=colours(k), alpha=0.7)
    for k in range(len(users)):  # every star above every user's dots
      ax.scatter(xy[k, 0], xy[k, 1], marker='*', s=260, color=colours(k), edgecolors='black', zorder=3)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  path = os.path.join(_WORKDIR.value, 'fig3.png')
  fig.savefig(path, dpi=110)
  print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)
