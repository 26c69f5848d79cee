"""The encoder's forward+backward in JAX next to PyTorch eager, on this machine.

  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu  # not a dependency
  python -m experiments.bench_torch [--scales=default,paper] [--rounds=9]

Issue 15's CPU targets (0.13 s for the default CIERec(MF) step, 5 s at paper
scale) were set from PyTorch's times on the machine of that day (0.127 s and
3.67 s); machines differ by 2x from day to day, so this prints both on the
same one. ResNet18 without its projection, train-mode BatchNorm, the
gradients of every parameter, on the step's 2 * batch images; the two are
first checked to compute the same function from the same weights, then
alternate call by call in this process, so both meet the machine in the same
state (medians; OMP_WAIT_POLICY=PASSIVE changed nothing here).
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


def main(_):
  logging.set_verbosity(logging.WARNING)
  if not _SCALES.value or set(_SCALES.value) - {'default', 'paper'}:
    raise app.UsageError(f'--scales={",".join(_SCALES.value)}: expected default and/or paper')
  if _ROUNDS.value < 1:
    raise app.UsageError(f'--rounds={_ROUNDS.value}: expected 1 or more')
  c = default.get_config()
  scales = {'default': (int(c.dataset.image_size), int(c.model.encoder_width), int(c.train.batch_size)),
            'paper': (224, 64, 32)}
  print(f'device: {yardstick.device_line()}; {torch_reference.versions()}')
  print('| setting | images | JAX fwd+bwd s | PyTorch fwd+bwd s | JAX / PyTorch |')
  print('|---|---|---|---|---|')
  for name in _SCALES.value:
    size, width, batch = scales[name]
    torch_model, jax_model = torch_reference.models(width)
    torch_args, jax_args = torch_reference.inputs(size, 2 * batch, width)
    variables = torch_reference.assert_same_function(torch_model, jax_model, torch_args, jax_args)
    s = torch_reference.alternate_seconds(torch_model, jax_model, variables, torch_args, jax_args,
                                          _ROUNDS.value)
    print(f"| {name} ({size}x{size}, width {width}) | {2 * batch} | {s['jax']:.4f} | "
          f"{s['torch']:.4f} | {s['jax'] / s['torch']:.2f} |", flush=True)


if __name__ == '__main__':
  app.run(main)
