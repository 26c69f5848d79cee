"""The encoder in PyTorch eager, the yardstick issue 15's targets were set by.

PyTorch is not a dependency of this project: only this reference and
`bench_torch` import it (`pip install torch==2.13.0` into the venv, with
`--index-url https://download.pytorch.org/whl/cpu` for the CPU build). The
network is ResNet18 as `models/resnet.py` builds it, with torchvision's layer
names, so `encoder_weights` loads its state dict into the JAX encoder and
both compute the same function (`assert_same_function`). Timing uses
channels_last, the layout oneDNN runs fastest on CPU.
"""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from cierec_jax import xla_options
from cierec_jax.models import encoder_weights
from cierec_jax.models import resnet
from experiments import yardstick

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the machine
  raise ImportError('experiments.torch_reference needs PyTorch, which the project does not '
                    'depend on: pip install torch==2.13.0 into the venv') from e


class _Block(nn.Module):
  def __init__(self, inputs: int, filters: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(filters)
    self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(filters)
    self.downsample = None
    if stride != 1 or inputs != filters:
      self.downsample = nn.Sequential(nn.Conv2d(inputs, filters, 1, stride, bias=False),
                                      nn.BatchNorm2d(filters))

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu((x if self.downsample is None else self.downsample(x)) + y)


class ResNet18(nn.Module):
  """x: [N, 3, H, W] -> [N, 8 * width], the pooled features (no projection)."""

  def __init__(self, width: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.pool = nn.MaxPool2d(3, 2, 1)
    inputs = width
    for stage in range(4):
      filters = width * 2**stage
      setattr(self, f'layer{stage + 1}', nn.Sequential(
          _Block(inputs, filters, 2 if stage else 1), _Block(filters, filters, 1)))
      inputs = filters

  def forward(self, x):
    x = self.pool(torch.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return x.mean((2, 3))


def jax_encoder(width: int):
  """The JAX encoder at the same width, without a projection (out_dim = 8 * width)."""
  return resnet.ResNet18(width, 8 * width)


def jax_variables(torch_model: ResNet18, jax_model, x_nhwc) -> dict:
  """The torch model's weights as the JAX encoder's variables, via encoder_weights."""
  target = jax.eval_shape(lambda k: jax_model.init(k, x_nhwc, train=True), jax.random.key(0))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'resnet18.npz')
    np.savez(path, **{k: v.detach().numpy() for k, v in torch_model.state_dict().items()})
    return jax.tree.map(jnp.asarray, encoder_weights.load(path, target))


def cotangent(images: int, width: int) -> np.ndarray:
  """[N, 8 * width] float32 weights of the features in the loss both differentiate:
  under a plain sum, train-mode BatchNorm's gradient is mostly cancellation,
  which leaves rounding alone to compare."""
  return np.cos(np.arange(images * 8 * width, dtype=np.float32)).reshape(images, 8 * width)


def jax_forward_backward(jax_model, jit: bool = True):
  """(variables, x, ct) -> (features [N, 8 * width], parameter gradients of
  <features, ct>), train-mode BatchNorm; jitted unless `jit` is False (for a
  caller's own program: compile options go on the top-level jit only)."""
  def step(variables, x, ct):
    def loss(params):
      y, _ = jax_model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
      return jnp.sum(y * ct), y
    grads, y = jax.grad(loss, has_aux=True)(variables['params'])
    return y, grads
  return xla_options.jit(step) if jit else step


def torch_forward_backward(torch_model: ResNet18, x, ct):
  """features [N, 8 * width] after a backward of <features, ct> (grads in .grad)."""
  torch_model.zero_grad(set_to_none=True)
  y = torch_model(x)
  y.backward(ct)
  return y


def inputs(image_size: int, images: int, width: int, seed: int = 0) -> tuple:
  """The same images and loss weights for both: (torch images [N, 3, H, W]
  channels_last, torch cotangent), (jax images [N, H, W, 3], jax cotangent)."""
  x = np.random.default_rng(seed).normal(size=(images, image_size, image_size, 3)).astype(np.float32)
  ct = cotangent(images, width)
  return ((torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=torch.channels_last),
           torch.from_numpy(ct)), (jnp.asarray(x), jnp.asarray(ct)))


def models(width: int, seed: int = 0):
  """(torch model in channels_last, the JAX encoder)."""
  torch.manual_seed(seed)
  return ResNet18(width).to(memory_format=torch.channels_last), jax_encoder(width)


# The check compares features, not gradients: gradients through train-mode
# BatchNorm are ill-conditioned in float32 and PyTorch's CPU kernels add their
# own error. At 224x224 (width 64), against float64: the last layer's weight
# gradient is 6e-6 (4 images) to 2e-2 (64 images) off in JAX, 1e-1 (4) and
# 4e-2 (64) in PyTorch; the stem's 1e-3 to 5e-3 in both. JAX's conv forms
# agree with XLA's to 1e-14 in float64 (README, Speed).
CHECK_IMAGES = 8


def assert_same_function(torch_model, jax_model, torch_args, jax_args, rtol: float = 1e-4):
  """Train-mode features of the first CHECK_IMAGES images agree to rtol of
  their largest value. Returns the JAX variables. *_args: from `inputs`."""
  variables = jax_variables(torch_model, jax_model, jax_args[0])
  y_jax, _ = jax_forward_backward(jax_model)(variables, *(a[:CHECK_IMAGES] for a in jax_args))
  y_torch = torch_forward_backward(torch_model, *(a[:CHECK_IMAGES] for a in torch_args))
  a, b = np.asarray(y_jax), y_torch.detach().numpy()
  scale, err = float(np.max(np.abs(b))), float(np.max(np.abs(a - b)))
  if err > rtol * scale:
    raise AssertionError(f'JAX and PyTorch encoders differ in their features: {err:.3g} '
                         f'(largest value {scale:.3g})')
  return variables


def alternate_seconds(torch_model, jax_model, variables, torch_args, jax_args, rounds: int,
                      steps_per_call: int = 1) -> dict:
  """Median seconds per forward+backward of each, one call of each per round.
  With steps_per_call > 1, 'jax_in_calls' too: JAX's seconds per step when a
  call runs that many (a lax.scan, as training runs image models; the same
  images each step), timed in the same rounds."""
  jax_step = jax_forward_backward(jax_model)
  calls = {'jax': lambda: jax.block_until_ready(jax_step(variables, *jax_args)),
           'torch': lambda: torch_forward_backward(torch_model, *torch_args)}
  if steps_per_call > 1:
    plain = jax_forward_backward(jax_model, jit=False)
    many, stacked = yardstick.same_batch_in_one_call(lambda v, b: plain(v, *b), tuple(jax_args),
                                                     steps_per_call)
    calls['jax_in_calls'] = lambda: jax.block_until_ready(many(variables, stacked))
  seconds = yardstick.alternating_medians(calls, rounds)
  if steps_per_call > 1:
    seconds['jax_in_calls'] /= steps_per_call
  return seconds


def versions() -> str:
  return f'torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}'

