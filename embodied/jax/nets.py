"""Neural network layers as ninjax modules.

Parameters are stored in float32; the forward pass runs in COMPUTE_DTYPE
(bfloat16 on GPU, float32 on CPU), which the JAX agent sets once at start.
"""

import math
import os

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np

f32 = jnp.float32
COMPUTE_DTYPE = f32


def set_compute_dtype(dtype):
  global COMPUTE_DTYPE
  COMPUTE_DTYPE = jnp.dtype(dtype)


def cast(x):
  return jax.tree.map(
      lambda v: v.astype(COMPUTE_DTYPE)
      if jnp.issubdtype(v.dtype, jnp.floating) else v, x)


ACTIVATIONS = {
    'silu': jax.nn.silu, 'relu': jax.nn.relu, 'gelu': jax.nn.gelu,
    'tanh': jnp.tanh, 'none': lambda x: x, 'elu': jax.nn.elu}
ACTS = tuple(ACTIVATIONS)
NORMS = ('rms', 'layer', 'none')


def act(name):
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation '{name}', choose from {list(ACTS)}")
  return ACTIVATIONS[name]


def init(fan_in, shape, outscale=1.0):
  """Truncated normal (at 2 std) with std outscale / sqrt(fan_in), as in the
  reference DreamerV3: outscale scales the standard deviation (a policy
  output layer at 0.01 starts 100x smaller than a plain layer)."""
  def fn():
    if outscale == 0.0:
      return jnp.zeros(shape, f32)
    # 0.8796 is the std of a unit normal truncated at 2 std.
    std = outscale / math.sqrt(fan_in) / 0.87962566
    return std * jax.random.truncated_normal(nj.seed(), -2, 2, shape, f32)
  return fn


class Linear(nj.Module):

  units: int = 1
  bias: bool = True
  outscale: float = 1.0

  def __call__(self, x):
    kernel, bias = self.params(x.shape[-1])
    x = x.astype(COMPUTE_DTYPE) @ kernel.astype(COMPUTE_DTYPE)
    if self.bias:
      x = x + bias.astype(x.dtype)
    return x

  def params(self, din):
    """(kernel [din, units], bias [units] or None), float32."""
    kernel = self.value('kernel', init(din, (din, self.units), self.outscale))
    bias = self.value('bias', jnp.zeros, self.units, f32) if self.bias else None
    return kernel, bias


class BlockLinear(nj.Module):
  """Block-diagonal linear layer: `blocks` independent groups of units."""

  units: int = 1
  blocks: int = 8
  bias: bool = True

  def __call__(self, x, block_major=False):
    """x [..., blocks * i] -> [..., units], or [blocks, N, units / blocks]
    with block_major (saves a transpose when the caller works per block)."""
    assert x.shape[-1] % self.blocks == 0, (x.shape, self.blocks)
    assert self.units % self.blocks == 0, (self.units, self.blocks)
    bin_, bout = x.shape[-1] // self.blocks, self.units // self.blocks
    shape = (self.blocks, bin_, bout)
    # Fan-in of the whole input, as the reference's initializer computes
    # for a [blocks, in, out] kernel: each unit sums over one block only,
    # so its output starts sqrt(blocks) smaller than a dense layer's.
    kernel = self.value('kernel', init(x.shape[-1], shape))
    bshape = x.shape[:-1]
    # Explicit block-major layout: [k, N, i] @ [k, i, o] -> [k, N, o]. Left
    # to einsum, XLA:CPU picks a batch-last output and slow transposes.
    x = x.reshape((-1, self.blocks, bin_)).astype(COMPUTE_DTYPE)
    x = jax.lax.dot_general(
        x.transpose(1, 0, 2), kernel.astype(COMPUTE_DTYPE),
        (((2,), (1,)), ((0,), (0,))))
    if self.bias:
      bias = self.value('bias', jnp.zeros, self.units, f32).astype(x.dtype)
      x = x + bias.reshape(self.blocks, 1, bout)
    if block_major:
      return x
    return x.transpose(1, 0, 2).reshape((*bshape, self.units))


class Norm(nj.Module):
  """RMSNorm (or LayerNorm) over the last axis, computed in float32."""

  kind: str = 'rms'
  eps: float = 1e-4

  def __call__(self, x):
    if self.kind == 'none':
      return x
    dtype = x.dtype
    x = x.astype(f32)
    scale = self.value('scale', jnp.ones, x.shape[-1], f32)
    if self.kind == 'rms':
      x = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps)
      x = x * scale
    elif self.kind == 'layer':
      mean = x.mean(-1, keepdims=True)
      var = ((x - mean) ** 2).mean(-1, keepdims=True)
      x = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale
      x = x + self.value('offset', jnp.zeros, x.shape[-1], f32)
    else:
      raise ValueError(f"Unknown norm '{self.kind}'")
    return x.astype(dtype)


class MLP(nj.Module):
  """`layers` times Linear -> Norm -> activation. The layers are submodules
  (linears[i], norms[i]), so that a caller can compute a layer in another
  form, e.g. the first one factored, and run the rest itself."""

  layers: int = 2
  units: int = 256
  act: str = 'silu'
  norm: str = 'rms'

  def __init__(self):
    self.linears = [Linear(units=self.units, name=f'linear{i}')
                    for i in range(self.layers)]
    self.norms = [Norm(kind=self.norm, name=f'norm{i}')
                  for i in range(self.layers)]

  def __call__(self, x):
    x = x.astype(COMPUTE_DTYPE)
    if not self.layers:
      return x
    x = self.linears[0](x)
    shape = x.shape[:-1]
    x = x.reshape((-1, x.shape[-1]))
    for i, (linear, norm) in enumerate(zip(self.linears, self.norms)):
      if i > 0:
        x = linear(x)
      x = act(self.act)(norm(x))
    return x.reshape((*shape, x.shape[-1]))


# Convolutions: SAME padding, stride 1, through lax.conv_general_dilated.
# On the CPU backend the kernel gradient is one GEMM of image patches
# instead of XLA:CPU's convolution over the batch (~10x faster there); other
# backends (cuDNN) keep XLA's own gradient.
#
# Under jax.vmap with a kernel per member (the agent's member axis), XLA
# turns a convolution into one grouped convolution (feature_group_count =
# members), which XLA:CPU runs on a slow path (3x3, 32 -> 64 channels over
# 256x32x32: 0.75 CPU-s per member vs 0.22 s for one). With member_ops()
# 'map', the convolution and its two gradients carry a batching rule that
# loops over the members with lax.map: one compiled body whatever their
# number, each iteration the single-member op. 'grouped' keeps XLA's form
# (cuDNN has grouped kernels). Chosen at trace time: DREAMER_MEMBER_OPS or
# set_member_ops(), 'auto' = 'map' on CPU, 'grouped' elsewhere.

MEMBER_OPS = ('auto', 'map', 'grouped')
_member_ops = [os.environ.get('DREAMER_MEMBER_OPS', 'auto')]


def set_member_ops(mode):
  """How ops with a kernel per vmapped member are batched (see above);
  takes effect for programs traced afterwards."""
  if mode not in MEMBER_OPS:
    raise ValueError(f"Unknown member ops '{mode}', choose from {MEMBER_OPS}")
  _member_ops[0] = mode


def member_ops():
  """The batching of per-member ops now: 'map' or 'grouped'."""
  mode = _member_ops[0]
  if mode not in MEMBER_OPS:
    raise ValueError(f"DREAMER_MEMBER_OPS is '{mode}', choose from "
                     f'{MEMBER_OPS}')
  if mode == 'auto':
    return 'map' if jax.default_backend() == 'cpu' else 'grouped'
  return mode


def per_member(fn, fold=()):
  """fn(*arrays) -> array, with a batching rule for the member axis.
  Arguments at positions `fold` have a leading batch axis of fn's own:
  when only those are batched (the others shared), the vmapped axis folds
  into it (one op on N times the batch, as plain vmap does). Otherwise
  'map' mode runs fn once per member with lax.map and 'grouped' mode
  leaves it to plain vmap."""
  @jax.custom_batching.custom_vmap
  def op(*args):
    return fn(*args)

  @op.def_vmap
  def rule(axis_size, in_batched, *args):
    batched = [i for i, b in enumerate(in_batched) if b]
    if all(i in fold for i in batched):
      args = [a.reshape((-1, *a.shape[2:])) if b else a
              for a, b in zip(args, in_batched)]
      out = op(*args)
      return out.reshape((axis_size, -1, *out.shape[1:])), True
    if member_ops() == 'grouped':
      axes = [0 if b else None for b in in_batched]
      return jax.vmap(fn, axes)(*args), True

    # The body calls op itself, so that an enclosing vmap batches it by
    # this rule again.
    def body(xs):
      full = list(args)
      for i, x in zip(batched, xs):
        full[i] = x
      return op(*full)
    return jax.lax.map(body, [args[i] for i in batched]), True
  return op


def _patches(x, k):
  """[N, H, W, C] -> [N, H, W, k*k*C], SAME zero padding, stride 1."""
  p = k // 2
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  cols = [xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]
  return jnp.concatenate(cols, -1)


# Largest im2col block built at once for a convolution's kernel gradient.
GRAD_SLICE_BYTES = 64 * 2 ** 20


def _lax_conv(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _conv_input_grad(dy, kernel):
  """The input gradient of a SAME, stride 1, odd-kernel convolution: the
  convolution of dy with the kernel mirrored in space, in and out
  swapped."""
  return _lax_conv(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))


def _gemm_kernel_grad(x, dy, k):
  """The kernel gradient [k, k, cin, cout] (float32) as patches^T @ dy,
  accumulated over batch slices so the patches stay small in memory."""
  n, cin, cout = x.shape[0], x.shape[-1], dy.shape[-1]
  slices = 1
  while (slices * 2 <= n and n % (slices * 2) == 0 and
         x.size * k * k * x.dtype.itemsize / slices > GRAD_SLICE_BYTES):
    slices *= 2

  def accumulate(dk, inputs):
    xs, dys = inputs
    cols = _patches(xs, k).reshape(-1, k * k * cin)
    # Sums in float32 from 16-bit patches, without float32 copies of them.
    part = jax.lax.dot_general(
        cols, dys.reshape(-1, cout), (((0,), (0,)), ((), ())),
        preferred_element_type=f32)
    return dk + part, None

  split = lambda v: v.reshape(slices, n // slices, *v.shape[1:])
  dk, _ = jax.lax.scan(
      accumulate, jnp.zeros((k * k * cin, cout), f32), (split(x), split(dy)))
  return dk.reshape(k, k, cin, cout)


def _xla_kernel_grad(x, dy, k):
  shape = (k, k, x.shape[-1], dy.shape[-1])
  _, vjp = jax.vjp(lambda kern: _lax_conv(x, kern), jnp.zeros(shape, x.dtype))
  return vjp(dy)[0]


def _kernel_grad(x, dy, k):
  if jax.default_backend() == 'cpu':
    return _gemm_kernel_grad(x, dy, k)
  return _xla_kernel_grad(x, dy, k)


_member_conv = per_member(_lax_conv, fold=(0,))
_member_input_grad = per_member(_conv_input_grad, fold=(0,))
# One op per kernel size (the batching rule sees arrays only).
_member_kernel_grads = {}


def _member_kernel_grad(x, dy, k):
  if k not in _member_kernel_grads:
    _member_kernel_grads[k] = per_member(
        lambda x, dy: _kernel_grad(x, dy, k))
  return _member_kernel_grads[k](x, dy)


@jax.custom_vjp
def _conv(x, kernel):
  return _member_conv(x, kernel)


def _conv_fwd(x, kernel):
  return _member_conv(x, kernel), (x, kernel)


def _conv_bwd(res, dy):
  x, kernel = res
  dx = _member_input_grad(dy, kernel)
  dk = _member_kernel_grad(x, dy, kernel.shape[0])
  return dx, dk.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x, kernel):
  """SAME convolution with stride 1. kernel: [k, k, cin, cout], k odd."""
  if kernel.shape[0] % 2 == 0:
    raise ValueError(
        f'Convolution kernels must have an odd size, got {kernel.shape[0]}.')
  if jax.default_backend() == 'cpu' or member_ops() == 'map':
    return _conv(x, kernel)
  return _lax_conv(x, kernel)


def upsample_kernel(kernel):
  """Turn a KxK kernel applied after 2x nearest upsampling into one 3x3 kernel
  on the low-resolution grid with 4 * cout outputs, one group per sub-pixel
  phase (dy, dx). Needs ~2.8x fewer FLOPs for a 5x5 kernel."""
  k, _, cin, cout = kernel.shape
  p = k // 2
  # For output phase d and tap u in [-p, p], the low-res offset is
  # floor((d + u) / 2), which lies in [-1, 1] for k = 5 (and k = 3).
  taps = np.zeros((2, 3, k), np.float32)
  for d in range(2):
    for u in range(-p, p + 1):
      taps[d, (d + u) // 2 + 1, u + p] = 1
  # out[a, b, i, cin, dy, dx, cout]: a, b low-res offsets; dy, dx phases.
  merged = jnp.einsum(
      'yau,xbv,uvio->abiyxo', taps, taps, kernel.astype(f32))
  return merged.reshape(3, 3, cin, 4 * cout)


def upsample_conv2d(x, kernel):
  """Equals conv2d(nearest_upsample_2x(x), kernel) for SAME padding."""
  n, h, w, _ = x.shape
  cout = kernel.shape[-1]
  y = conv2d(x, upsample_kernel(kernel).astype(x.dtype))
  y = y.reshape(n, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, 2 * h, 2 * w, cout)


def space_to_depth_kernel(kernel):
  """Turn a KxK kernel (K <= 5) into a 3x3 kernel on the 2x2 space-to-depth
  grid: inputs (a', b', cin) and outputs (a, b, cout), one output group per
  phase (a, b) of the full-resolution output."""
  k, _, cin, cout = kernel.shape
  p = k // 2
  # Output phase a, input phase a', low-res offset d: tap u = 2d + a' - a.
  taps = np.zeros((2, 2, 3, k), np.float32)  # [a, a', d + 1, u + p]
  for a in range(2):
    for a2 in range(2):
      for d in range(-1, 2):
        u = 2 * d + a2 - a
        if -p <= u <= p:
          taps[a, a2, d + 1, u + p] = 1
  merged = jnp.einsum(
      'yqau,xrbv,uvio->abqrixyo', taps, taps, kernel.astype(f32))
  return merged.reshape(3, 3, 4 * cin, 4 * cout)


def conv2d_maxpool2(x, kernel):
  """Equals maxpool2(conv2d(x, kernel)): a 3x3 convolution on the 2x2
  space-to-depth input computes all four output phases at half resolution,
  and the pool is a max over the phases. Few-channel convolutions become 4x
  wider ones, which XLA runs much faster."""
  n, h, w, c = x.shape
  cout = kernel.shape[-1]
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, h // 2, w // 2, 4 * c)
  y = conv2d(x, space_to_depth_kernel(kernel).astype(x.dtype))
  return y.reshape(n, h // 2, w // 2, 4, cout).max(3)


def upsample(x):
  return jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)


def maxpool2(x):
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4))


class Conv2D(nj.Module):
  """SAME 2D convolution, optionally after 2x nearest upsampling or followed
  by 2x2 max-pooling. `fast` computes those two cases with the equivalent
  half-resolution formulations above (same outputs, fewer or wider ops)."""

  depth: int = 1
  kernel: int = 5
  upsample: bool = False
  pool: bool = False
  bias: bool = True
  fast: bool = True
  outscale: float = 1.0

  def __call__(self, x):
    cin = x.shape[-1]
    shape = (self.kernel, self.kernel, cin, self.depth)
    kernel = self.value(
        'kernel', init(self.kernel ** 2 * cin, shape, self.outscale))
    x = x.astype(COMPUTE_DTYPE)
    kernel = kernel.astype(COMPUTE_DTYPE)
    if self.upsample and self.fast:
      x = upsample_conv2d(x, kernel)
    elif self.upsample:
      x = conv2d(upsample(x), kernel)
    elif self.pool and self.fast:
      x = conv2d_maxpool2(x, kernel)
    elif self.pool:
      x = maxpool2(conv2d(x, kernel))
    else:
      x = conv2d(x, kernel)
    if self.bias:  # Per-channel bias commutes with the max-pool.
      x = x + self.value('bias', jnp.zeros, self.depth, f32).astype(x.dtype)
    return x
