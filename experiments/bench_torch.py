"""The encoder's forward+backward in JAX next to PyTorch eager, on this machine.

  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu  # not a dependency
  python -m experiments.bench_torch [--scales=default,paper] [--rounds=9] [--steps_per_call=6]

Issue 15's CPU targets (0.13 s for the default CIERec(MF) step, 5 s at paper
scale) were set from PyTorch's times on the machine of that day (0.127 s and
3.67 s); machines differ by 2x from day to day, so this prints both on the
same one. ResNet18 without its projection, train-mode BatchNorm, the
gradients of every parameter, on the step's 2 * batch images; the two are
first checked to compute the same function from the same weights, then
alternate call by call in this process, so both meet the machine in the same
state (medians; OMP_WAIT_POLICY=PASSIVE changed nothing here). With
--steps_per_call=N, JAX is also timed per step in calls of N steps, as
training runs image models (train.steps_per_call, auto 4-8: 6 at the default
config), and that column gets its own ratio.
"""

from absl import app
from absl import flags
from absl import logging

from configs import default
from experiments import torch_reference
from experiments import yardstick

_SCALES = flags.DEFINE_list('scales', ['default', 'paper'],
                            'default: the default config; paper: 224x224, width 64, 32 triples.')
_ROUNDS = flags.DEFINE_integer('rounds', 9, 'Alternating rounds (one call of each); medians.')
_STEPS_PER_CALL = flags.DEFINE_integer('steps_per_call', 1, 'Also time JAX per step in calls of '
                                       'this many steps (1: not).')


def main(_):
  logging.set_verbosity(logging.WARNING)
  if not _SCALES.value or set(_SCALES.value) - {'default', 'paper'}:
    raise app.UsageError(f'--scales={",".join(_SCALES.value)}: expected default and/or paper')
  for flag in (_ROUNDS, _STEPS_PER_CALL):
    if flag.value < 1:
      raise app.UsageError(f'--{flag.name}={flag.value}: expected 1 or more')
  n = _STEPS_PER_CALL.value
  c = default.get_config()
  scales = {'default': (int(c.dataset.image_size), int(c.model.encoder_width), int(c.train.batch_size)),
            'paper': (224, 64, 32)}
  print(f'device: {yardstick.device_line()}; {torch_reference.versions()}')
  in_calls = (f' JAX s/step, {n} per call | its ratio |', '---|---|') if n > 1 else ('', '')
  print('| setting | images | JAX fwd+bwd s | PyTorch fwd+bwd s | JAX / PyTorch |' + in_calls[0])
  print('|---|---|---|---|---|' + in_calls[1])
  for name in _SCALES.value:
    size, width, batch = scales[name]
    torch_model, jax_model = torch_reference.models(width)
    torch_args, jax_args = torch_reference.inputs(size, 2 * batch, width)
    variables = torch_reference.assert_same_function(torch_model, jax_model, torch_args, jax_args)
    s = torch_reference.alternate_seconds(torch_model, jax_model, variables, torch_args, jax_args,
                                          _ROUNDS.value, n)
    more = f" {s['jax_in_calls']:.4f} | {s['jax_in_calls'] / s['torch']:.2f} |" if n > 1 else ''
    print(f"| {name} ({size}x{size}, width {width}) | {2 * batch} | {s['jax']:.4f} | "
          f"{s['torch']:.4f} | {s['jax'] / s['torch']:.2f} |" + more, flush=True)


if __name__ == '__main__':
  app.run(main)
