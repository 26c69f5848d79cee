"""The learning-rate ladder tuning walks: where a grid is extended and what it picks.

Kept apart from tune.py (which defines absl flags) so the rule is importable
and testable next to the other experiment scripts.
"""

# The paper's range for the Adagrad learning rate, on a 1-2-5 log ladder.
LADDER = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def extend(tried: dict) -> list:
  """tried: {lr: valid score} -> the ladder values to add, [] when the best is
  inside the grid or at an end of the ladder."""
  lrs = sorted(tried)
  best = best_lr(tried)
  below = [x for x in LADDER if x < lrs[0]]
  above = [x for x in LADDER if x > lrs[-1]]
  if best == lrs[0] and below:
    return [below[-1]]
  if best == lrs[-1] and above:
    return [above[0]]
  return []


def at_edge(tried: dict) -> bool:
  """Whether the best value is the smallest or the largest tried."""
  lrs = sorted(tried)
  return best_lr(tried) in (lrs[0], lrs[-1])


def best_lr(tried: dict) -> float:
  """The rate with the best valid score; ties: the smaller rate."""
  return max(sorted(tried), key=lambda lr: (tried[lr], -lr))
