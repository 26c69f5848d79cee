"""The ladders tuning walks: where a grid is extended and which value it picks.

Kept apart from tune.py (which defines absl flags) so the rule is importable
and testable next to the other experiment scripts.
"""

# The paper's range for the Adagrad learning rate, on a 1-2-5 log ladder.
LR = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
# train.weight_l2: 0 is no penalty, a natural end rather than an edge.
WEIGHT_L2 = (0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0)


def extend(tried: dict, ladder=LR) -> list:
  """tried: {value: valid score} -> the ladder values to add, [] when the best
  is inside the grid or at an end of the ladder."""
  values = sorted(tried)
  chosen = best(tried)
  below = [x for x in ladder if x < values[0]]
  above = [x for x in ladder if x > values[-1]]
  if chosen == values[0] and below:
    return [below[-1]]
  if chosen == values[-1] and above:
    return [above[0]]
  return []


def at_edge(tried: dict, natural_ends=()) -> bool:
  """Whether the best value is the smallest or the largest tried (and not one
  of `natural_ends`, such as a penalty of 0)."""
  values = sorted(tried)
  chosen = best(tried)
  return chosen in (values[0], values[-1]) and chosen not in natural_ends


def best(tried: dict) -> float:
  """The value with the best valid score; ties: the smaller value."""
  return max(sorted(tried), key=lambda v: (tried[v], -v))
