"""Layers checked against loops and dense equivalents."""

import itertools
import re

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np
import pytest

from embodied.jax import nets
from tests.helpers import fill_params


def rand(rng, *shape):
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def conv_ref(x, k):
  """SAME cross-correlation, stride 1, odd kernel, by loops over taps."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  n, h, w, _ = x.shape
  ks = k.shape[0]
  p = ks // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  out = np.zeros((n, h, w, k.shape[-1]))
  for i in range(h):
    for j in range(w):
      patch = xp[:, i:i + ks, j:j + ks]  # [n, ks, ks, cin]
      out[:, i, j] = np.einsum('nabc,abco->no', patch, k)
  return out


CONV_CASES = [
    # (n, h, w, cin, cout, kernel)
    (2, 5, 6, 3, 4, 3), (2, 8, 8, 1, 3, 3), (2, 6, 6, 4, 8, 5),
    (1, 9, 4, 2, 5, 5), (3, 4, 4, 6, 1, 5), (1, 3, 3, 2, 2, 5)]


@pytest.mark.parametrize('case', CONV_CASES)
def test_conv2d_matches_loop(case):
  n, h, w, cin, cout, k = case
  rng = np.random.default_rng(sum(case))
  x, kern = rand(rng, n, h, w, cin), rand(rng, k, k, cin, cout)
  got = nets.conv2d(x, kern)
  assert got.shape == (n, h, w, cout)
  np.testing.assert_allclose(got, conv_ref(x, kern), rtol=1e-5, atol=1e-5)


def test_conv2d_even_kernel_rejected():
  # SAME padding of an even kernel is asymmetric, which the gradient's
  # patches (k // 2 on both sides) would get wrong by a pixel.
  rng = np.random.default_rng(1)
  x, kern = rand(rng, 1, 6, 6, 2), rand(rng, 4, 4, 2, 3)
  with pytest.raises(ValueError, match='odd'):
    nets.conv2d(x, kern)


def test_conv2d_gemm_gradient_equals_xla_gradient():
  # The CPU path's patch-GEMM kernel gradient against XLA's own (what
  # other backends use), in float32 and bfloat16.
  rng = np.random.default_rng(2)
  for k, dtype in ((3, jnp.float32), (5, jnp.float32), (5, jnp.bfloat16)):
    x, kern, r = rand(rng, 2, 6, 5, 3), rand(rng, k, k, 3, 4), rand(
        rng, 2, 6, 5, 4)
    x, kern = x.astype(dtype), kern.astype(dtype)
    grads = {}
    for name, conv in (('gemm', nets._conv),
                       ('xla', nets._lax_conv)):
      loss = lambda x, kern: (conv(x, kern).astype(jnp.float32) * r).sum()
      grads[name] = jax.jit(jax.grad(loss, (0, 1)))(x, kern)
    tol = 1e-4 if dtype == jnp.float32 else 3e-2
    for a, b in zip(grads['gemm'], grads['xla']):
      assert a.dtype == b.dtype == dtype
      np.testing.assert_allclose(np.asarray(a, np.float32),
                                 np.asarray(b, np.float32), rtol=tol,
                                 atol=tol)


def test_upsample_vs_loop():
  rng = np.random.default_rng(3)
  x = np.asarray(rand(rng, 2, 3, 4, 2))
  got = np.asarray(nets.upsample(jnp.asarray(x)))
  assert got.shape == (2, 6, 8, 2)
  for i, j in itertools.product(range(6), range(8)):
    np.testing.assert_array_equal(got[:, i, j], x[:, i // 2, j // 2])


@pytest.mark.parametrize('k', [3, 5])
def test_upsample_conv2d_equals_conv_of_upsample(k):
  rng = np.random.default_rng(k)
  for n, h, w, cin, cout in ((2, 4, 4, 3, 2), (1, 3, 5, 1, 4)):
    x, kern = rand(rng, n, h, w, cin), rand(rng, k, k, cin, cout)
    fast = nets.upsample_conv2d(x, kern)
    slow = conv_ref(nets.upsample(x), kern)
    assert fast.shape == (n, 2 * h, 2 * w, cout)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-4)


def test_upsample_conv2d_gradients_match():
  rng = np.random.default_rng(4)
  x, kern, r = rand(rng, 1, 3, 4, 2), rand(rng, 5, 5, 2, 3), rand(
      rng, 1, 6, 8, 3)
  fast = lambda x, k: (nets.upsample_conv2d(x, k) * r).sum()
  slow = lambda x, k: (nets._lax_conv(nets.upsample(x), k) * r).sum()
  gf = jax.jit(jax.grad(fast, (0, 1)))(x, kern)
  gs = jax.jit(jax.grad(slow, (0, 1)))(x, kern)
  for a, b in zip(gf, gs):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_maxpool2_vs_loop():
  rng = np.random.default_rng(5)
  x = np.asarray(rand(rng, 2, 6, 4, 3))
  got = np.asarray(nets.maxpool2(jnp.asarray(x)))
  assert got.shape == (2, 3, 2, 3)
  for b, i, j, c in itertools.product(range(2), range(3), range(2), range(3)):
    window = [x[b, 2 * i + di, 2 * j + dj, c] for di in (0, 1) for dj in (0, 1)]
    assert got[b, i, j, c] == max(window)


@pytest.mark.parametrize('k', [3, 5])
def test_conv2d_maxpool2_equals_pool_of_conv(k):
  rng = np.random.default_rng(10 + k)
  for n, h, w, cin, cout in ((2, 4, 4, 3, 2), (1, 6, 8, 1, 4)):
    x, kern = rand(rng, n, h, w, cin), rand(rng, k, k, cin, cout)
    fast = nets.conv2d_maxpool2(x, kern)
    slow = conv_ref(x, kern)
    slow = slow.reshape(n, h // 2, 2, w // 2, 2, cout).max((2, 4))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-4)


# Modules.


def run(module, *args, seed=0):
  """Make the module's parameters, then apply it; returns (state, out)."""
  state = fill_params(module, *args, seed=seed)
  return nj.pure(module)(state, *args)


def test_linear_formula():
  rng = np.random.default_rng(6)
  x = rand(rng, 2, 3, 5)
  lin = nets.Linear(units=4, name='lin')
  state, out = run(lin, x)
  assert state['lin/kernel'].shape == (5, 4) and state['lin/bias'].shape == (4,)
  want = np.asarray(x) @ np.asarray(state['lin/kernel']) + np.asarray(
      state['lin/bias'])
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  # Zero outscale gives a zero kernel.
  state, _ = nj.pure(nets.Linear(units=3, outscale=0.0, name='zero'))(
      {}, x, create=True, seed=0)
  np.testing.assert_array_equal(state['zero/kernel'], 0)


def test_initial_weights_scale_the_std_by_outscale():
  # As the reference: std = outscale / sqrt(fan_in) for a truncated normal
  # (cut at 2 std), so outscale 0.01 gives 1/100 of a plain layer's std.
  x = jnp.zeros((1, 1024))
  for outscale in (1.0, 0.01):
    mod = nets.Linear(units=512, outscale=outscale, name='lin')
    state, _ = nj.pure(mod)({}, x, create=True, seed=0)
    kernel = np.asarray(state['lin/kernel'], np.float64)
    np.testing.assert_allclose(kernel.std(), outscale / 32, rtol=0.01)
    assert np.abs(kernel).max() <= 2 * outscale / 32 / 0.8796 + 1e-9


def test_block_linear_initial_std_uses_the_whole_input_as_fan_in():
  # A [blocks, in / blocks, out / blocks] kernel starts with the std of a
  # dense layer over the whole input (the reference's fan-in), so each
  # output unit, which sums one block only, starts sqrt(blocks) smaller.
  x = jnp.zeros((1, 2048))
  mod = nets.BlockLinear(units=1024, blocks=8, name='blin')
  state, _ = nj.pure(mod)({}, x, create=True, seed=0)
  kernel = np.asarray(state['blin/kernel'], np.float64)
  assert kernel.shape == (8, 256, 128)
  np.testing.assert_allclose(kernel.std(), 1 / np.sqrt(2048), rtol=0.01)


@pytest.mark.parametrize('blocks,units,inp', [(2, 6, 4), (4, 8, 12), (1, 3, 5)])
def test_block_linear_equals_block_diagonal_dense(blocks, units, inp):
  rng = np.random.default_rng(blocks * units)
  x = rand(rng, 3, 2, inp)  # Two batch dims.
  mod = nets.BlockLinear(units=units, blocks=blocks, name='blin')
  state, out = run(mod, x, seed=1)
  kernel = np.asarray(state['blin/kernel'])
  bin_, bout = inp // blocks, units // blocks
  assert kernel.shape == (blocks, bin_, bout)
  dense = np.zeros((inp, units))
  for k in range(blocks):
    for i in range(bin_):
      for o in range(bout):
        dense[k * bin_ + i, k * bout + o] = kernel[k, i, o]
  want = np.asarray(x) @ dense + np.asarray(state['blin/bias'])
  assert out.shape == (3, 2, units)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_norm_rms_and_layer_formulas():
  rng = np.random.default_rng(7)
  x = np.asarray(rand(rng, 3, 6)) * 3
  scale = np.asarray(rand(rng, 6))
  offset = np.asarray(rand(rng, 6))
  for kind in ('rms', 'layer'):
    mod = nets.Norm(kind=kind, eps=1e-4, name='norm')
    state, _ = nj.pure(mod)({}, jnp.asarray(x), create=True)  # No randoms.
    np.testing.assert_array_equal(state['norm/scale'], 1)
    state['norm/scale'] = jnp.asarray(scale)
    if kind == 'layer':
      state['norm/offset'] = jnp.asarray(offset)
    _, out = nj.pure(mod)(state, jnp.asarray(x))
    for b in range(3):
      row = x[b].astype(np.float64)
      if kind == 'rms':
        want = row / np.sqrt((row ** 2).mean() + 1e-4) * scale
      else:
        mu, var = row.mean(), ((row - row.mean()) ** 2).mean()
        want = (row - mu) / np.sqrt(var + 1e-4) * scale + offset
      np.testing.assert_allclose(out[b], want, rtol=1e-5, atol=1e-5)
  # 'none' is the identity.
  _, out = nj.pure(nets.Norm(kind='none', name='n'))({}, jnp.asarray(x))
  np.testing.assert_array_equal(out, x)


def test_mlp_is_linear_norm_act():
  rng = np.random.default_rng(8)
  x = rand(rng, 2, 3, 4)
  mlp = nets.MLP(layers=2, units=5, act='silu', norm='rms', name='mlp')
  state, out = run(mlp, x)
  h = np.asarray(x, np.float64).reshape(6, 4)
  for i in range(2):
    h = h @ np.asarray(state[f'mlp/linear{i}/kernel']) + np.asarray(
        state[f'mlp/linear{i}/bias'])
    h = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-4)
    h = h * np.asarray(state[f'mlp/norm{i}/scale'])
    h = h / (1 + np.exp(-h))
  np.testing.assert_allclose(out, h.reshape(2, 3, 5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', ['plain', 'upsample', 'pool'])
def test_conv2d_module(mode):
  rng = np.random.default_rng(9)
  x = rand(rng, 2, 4, 6, 3)
  outs = {}
  for fast in (True, False):
    mod = nets.Conv2D(depth=2, kernel=5, upsample=(mode == 'upsample'),
                      pool=(mode == 'pool'), fast=fast, name='conv')
    state, outs[fast] = run(mod, x)  # Same parameters for all.
  inp = nets.upsample(x) if mode == 'upsample' else x
  want = conv_ref(inp, state['conv/kernel'])
  if mode == 'pool':
    want = np.asarray(nets.maxpool2(jnp.asarray(want)))
  want = want + np.asarray(state['conv/bias'])
  for key, out in outs.items():
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4, err_msg=key)


def test_act_unknown_name():
  with pytest.raises(ValueError, match='swish'):
    nets.act('swish')


def test_conv2d_kernel_gradient_in_batch_slices(monkeypatch):
  # A tiny slice budget forces the sliced accumulation of the kernel grad.
  monkeypatch.setattr(nets, 'GRAD_SLICE_BYTES', 512)
  rng = np.random.default_rng(3)
  x, kern = rand(rng, 8, 6, 6, 3), rand(rng, 5, 5, 3, 4)
  loss = lambda conv: lambda x, k: (conv(x, k) ** 2).sum()
  got = jax.grad(loss(nets.conv2d), (0, 1))(x, kern)
  want = jax.grad(loss(nets._lax_conv), (0, 1))(x, kern)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


# A kernel per vmapped member (the agent's member axis, run.seeds): the
# batching rules of nets.per_member against plain vmap of XLA's ops.

MEMBER_LAYERS = {
    # name: (layer, reference, x shape, kernel shape)
    'conv': (nets.conv2d, nets._lax_conv, (4, 6, 5, 3), (3, 3, 3, 4)),
    'pool': (nets.conv2d_maxpool2,
             lambda x, k: nets.maxpool2(nets._lax_conv(x, k)),
             (3, 8, 4, 2), (5, 5, 2, 3)),
    'upsample': (nets.upsample_conv2d,
                 lambda x, k: nets._lax_conv(nets.upsample(x), k),
                 (3, 3, 4, 3), (5, 5, 3, 2)),
}


@pytest.fixture(params=['map', 'grouped'])
def member_ops(request, monkeypatch):
  monkeypatch.setattr(nets, '_member_ops', [request.param])
  return request.param


def member_grads(layer, x, kern, r, axes=(0, 0, 0)):
  """Jitted vmap over members of the loss's value and gradients."""
  loss = lambda x, k, r: (layer(x, k) * r).sum()
  return jax.jit(jax.vmap(jax.value_and_grad(loss, (0, 1)), axes))(
      x, kern, r)


def assert_trees_close(got, want, tol=1e-4):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize('name', MEMBER_LAYERS)
def test_member_conv_values_and_gradients(name, member_ops):
  # Every member its own input and kernel (the train step's case).
  layer, ref, xs, ks = MEMBER_LAYERS[name]
  rng = np.random.default_rng(len(name))
  n = 3
  x, kern = rand(rng, n, *xs), rand(rng, n, *ks)
  r = rand(rng, n, *jax.eval_shape(ref, x[0], kern[0]).shape)
  assert_trees_close(member_grads(layer, x, kern, r),
                     member_grads(ref, x, kern, r))


@pytest.mark.parametrize('axes', [(0, None, 0), (None, 0, 0)])
def test_member_conv_shared_input_or_kernel(axes, member_ops):
  # One side shared: a shared kernel folds the members into the batch.
  layer, ref, xs, ks = MEMBER_LAYERS['upsample']
  rng = np.random.default_rng(12)
  n = 2
  x = rand(rng, *((n,) if axes[0] == 0 else ()), *xs)
  kern = rand(rng, *((n,) if axes[1] == 0 else ()), *ks)
  r = rand(rng, n, xs[0], 2 * xs[1], 2 * xs[2], ks[-1])
  assert_trees_close(member_grads(layer, x, kern, r, axes),
                     member_grads(ref, x, kern, r, axes))


def test_member_conv_nested_vmap(member_ops):
  # Two vmapped axes over the kernel (e.g. an ensemble inside each member).
  rng = np.random.default_rng(13)
  x, kern = rand(rng, 2, 3, 2, 5, 5, 2), rand(rng, 2, 3, 3, 3, 2, 4)
  r = rand(rng, 2, 3, 2, 5, 5, 4)
  def grads(layer):
    loss = lambda x, k, r: (layer(x, k) * r).sum()
    return jax.jit(jax.vmap(jax.vmap(jax.grad(loss, (0, 1)))))(x, kern, r)
  assert_trees_close(grads(nets.conv2d), grads(nets._lax_conv))


def test_member_conv_program_does_not_grow(monkeypatch):
  # 'map' loops over the members in one body: no grouped convolution and
  # as many convolutions for 5 members as for 2 (forward and input
  # gradient; the kernel gradient is a GEMM on the CPU); 'grouped' is
  # XLA's form.
  layer = MEMBER_LAYERS['pool'][0]
  def convs(n, mode):
    monkeypatch.setattr(nets, '_member_ops', [mode])
    x, kern = jnp.zeros((n, 2, 8, 8, 3)), jnp.zeros((n, 5, 5, 3, 4))
    loss = lambda x, k: layer(x, k).sum()
    text = jax.jit(jax.vmap(jax.grad(loss, (0, 1)))).lower(
        x, kern).as_text()
    groups = [int(g) for g in re.findall(
        r'feature_group_count = (\d+)', text)]
    return len(groups), max(groups)
  assert convs(2, 'map') == convs(5, 'map') == (2, 1)
  assert convs(2, 'grouped')[1] == 2


def test_member_ops_mode(monkeypatch):
  monkeypatch.setattr(nets, '_member_ops', ['auto'])
  assert nets.member_ops() == 'map'  # The CPU backend.
  nets.set_member_ops('grouped')
  assert nets.member_ops() == 'grouped'
  with pytest.raises(ValueError, match='grouped'):
    nets.set_member_ops('loop')
  monkeypatch.setattr(nets, '_member_ops', ['loop'])
  with pytest.raises(ValueError, match='DREAMER_MEMBER_OPS'):
    nets.member_ops()


def test_xla_kernel_gradient_equals_gemm():
  # Other backends' kernel gradient (used per member in 'map' mode there).
  rng = np.random.default_rng(14)
  x, dy = rand(rng, 3, 6, 5, 2), rand(rng, 3, 6, 5, 4)
  np.testing.assert_allclose(nets._xla_kernel_grad(x, dy, 5),
                             nets._gemm_kernel_grad(x, dy, 5),
                             rtol=1e-4, atol=1e-4)


def test_mlp_layers_are_addressable_submodules():
  """linears[i] and norms[i] are the MLP's layers (parameters under
  linear{i} and norm{i}): running them in order with the activation is the
  MLP, so a caller can compute a layer in another form and go on."""
  rng = np.random.default_rng(15)
  x = rand(rng, 6, 4)
  mlp = nets.MLP(layers=2, units=5, act='silu', norm='rms', name='mlp')
  state, out = run(mlp, x)
  assert [m.path for m in mlp.linears] == ['mlp/linear0', 'mlp/linear1']
  assert [m.path for m in mlp.norms] == ['mlp/norm0', 'mlp/norm1']

  def by_layers(x):
    for linear, norm in zip(mlp.linears, mlp.norms):
      x = nets.act(mlp.act)(norm(linear(x)))
    return x

  _, got = nj.pure(by_layers)(state, x)
  np.testing.assert_array_equal(got, out)
  assert nets.MLP(layers=0, name='none').linears == []
