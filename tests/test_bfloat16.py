"""The bfloat16 compute path (the default on GPUs), exercised on the CPU:
finite steps with every extension on, closeness to float32, the quantities
that must stay float32, 16-bit activations, and no JAX deprecations."""

import warnings

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np
import pytest

from dreamerv3 import main as dmain
from dreamerv3.agent import Dreamer
from embodied import jax as ejax
from embodied.jax import nets
from tests.helpers import config_and_spaces, random_batch

bf16, f32 = jnp.bfloat16, jnp.float32

# Every extension and the image/vector, discrete/continuous cases over two
# agents: an image agent with the masked loss, latent reward disagreement,
# a priority signal and the binary features; a vector agent with continuous
# actions.
# Small images with two conv stages: the same code paths, compiled faster.
SMALL = ['--env.size', '16,16', '--agent.enc.mults', '2,2',
         '--agent.dec.mults', '2,2']
EVERYTHING = [
    '--task', 'dummy_disc', '--dynamics.masked_loss', 'True',
    '--agent.use_intrinsic', 'True', '--agent.intrinsic.ensemble_size', '3',
    '--replay.priosignal', 'uncertainty', '--configs', 'debug',
    'binary_features']
CONTINUOUS = ['--task', 'dummy_cont', '--configs', 'debug', *SMALL]


@pytest.fixture
def compute_dtype():
  """Sets the agent's compute dtype for one test, then restores float32."""
  def set_dtype(dtype):
    nets.set_compute_dtype(dtype)
  yield set_dtype
  nets.set_compute_dtype(f32)


def run_agent(config, obs_space, act_space):
  """Builds the jitted agent and runs policy, train (twice) and report."""
  agent = ejax.Agent(Dreamer, obs_space, act_space,
                     dmain.agent_config(config), seed=0)
  carry = agent.init_policy(2)
  obs = {k: np.zeros((2, *s.shape), s.dtype)
         for k, s in agent.obs_space.items()}
  obs['is_first'][:] = True
  carry, act, _ = agent.policy(carry, obs)
  outs = []
  for i in range(2):
    out, metrics = agent.train(random_batch(agent, i))
    outs.append((out, metrics))
  report = agent.report(random_batch(agent, 5))
  return agent, carry, act, outs, report


@pytest.mark.parametrize('argv', [EVERYTHING + SMALL, CONTINUOUS],
                         ids=['image_disc_extensions', 'vector_cont'])
def test_bfloat16_steps_are_finite_and_keep_float32_state(
    argv, compute_dtype):
  compute_dtype('bfloat16')
  config, obs_space, act_space = config_and_spaces(argv)
  # A DeprecationWarning while building, tracing and running the steps
  # fails the test: the JAX API we use must hold from 0.10 through 0.12.
  # (JAX attributes its warnings to the caller's module, ours or a
  # library's, so every DeprecationWarning counts.)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', DeprecationWarning)
    agent, carry, act, outs, report = run_agent(config, obs_space, act_space)
  deprecations = [f'{w.filename}:{w.lineno}: {w.message}' for w in caught
                  if issubclass(w.category, DeprecationWarning)]
  assert not deprecations, deprecations
  for out, metrics in outs:
    for key, value in metrics.items():
      assert np.all(np.isfinite(value)), key
    assert metrics['opt/grad_norm'] > 0
    assert metrics['train/loss/rec' if 'train/loss/rec' in metrics else
                   'loss/rec'] > 0
  # State that must stay float32: parameters, the slow critic, optimizer
  # moments and step, return normaliser statistics, extension state.
  for key, value in agent.state.items():
    assert value.dtype in (f32, jnp.int32), (key, value.dtype)
  assert any('slowval' in k for k in agent.state)
  assert any('retnorm' in k for k in agent.state)
  # The RSSM carry between policy steps (its deter state) is float32.
  (state, prevact) = carry
  assert state['deter'].dtype == f32 and state['stoch'].dtype == f32
  assert prevact.dtype == f32
  space = act_space['action']
  assert act['action'].dtype == space.dtype
  if 'priority' in outs[0][0]:
    assert outs[0][0]['priority']['value'].dtype == np.float32
    assert np.all(np.isfinite(outs[0][0]['priority']['value']))
  videos = [k for k in report if k.startswith('openloop/')]
  assert bool(videos) == ('image' in obs_space)
  for key in videos:
    assert report[key].dtype == np.uint8


def _model(argv):
  config, obs_space, act_space = config_and_spaces(argv)
  obs_space = {k: v for k, v in obs_space.items() if not k.startswith('log/')}
  act_space = {k: v for k, v in act_space.items() if k != 'reset'}
  return Dreamer(obs_space, act_space, dmain.agent_config(config),
                 name='agent'), config


def _host_inputs(model):
  return {k: {n: np.asarray(v, np.float32) for n, v in d.items()}
          for k, d in model.host.inputs().items()}


def _float32_state(model, data):
  compute = nets.COMPUTE_DTYPE
  nets.set_compute_dtype(f32)
  try:
    seed = np.uint32([0, 0])
    state = nj.init(model.train)({}, data, _host_inputs(model), seed=seed)
    state, _ = nj.pure(model.after_init)(state, seed=seed)
  finally:
    nets.set_compute_dtype(compute)
  return state


def _numpy_batch(model, config, seed):
  class Shim:
    obs_space, act_space = model.obs_space, model.act_space
    _dummy_batch = lambda self: ejax.Agent._dummy_batch(self)
  shim = Shim()
  shim.config = dmain.agent_config(config)
  shim.ext_space = model.ext_space()
  return random_batch(shim, seed)


def test_bfloat16_gradients_match_float32(compute_dtype):
  """One train step's loss terms and gradients in bfloat16 against float32
  on the same batch, parameters and seed. bfloat16 keeps 8 significant
  bits (relative rounding up to 2^-9 ~ 0.2% per operation) and the errors
  of ~10 layers, the scans and the reductions partly cancel: measured, the
  loss terms agree to 0.3% and each network's gradient has cosine >= 0.991
  with float32's (the decoder lowest). The bounds, 1% and 0.98, leave room
  for other batches and seeds; the quantities that must stay float32 are
  checked by dtype below."""
  model, config = _model(EVERYTHING)
  data = _numpy_batch(model, config, 0)
  state = _float32_state(model, data)
  inputs = _host_inputs(model)
  seed = np.uint32([3, 4])

  def grads(dtype):
    compute_dtype(dtype)
    def fn(state, data):
      def loss(params):
        merged = {**state, **params}
        _, (total, (_, metrics)) = nj.pure(model.loss)(
            merged, data, inputs, seed=seed)
        return total, metrics
      params = {k: v for k, v in state.items() if '/opt/' not in k
                and 'slowval' not in k and 'retnorm' not in k}
      (total, metrics), g = jax.value_and_grad(loss, has_aux=True)(params)
      return total, metrics, g
    return jax.jit(fn)(state, data)

  total32, metrics32, g32 = grads(f32)
  total16, metrics16, g16 = grads(bf16)
  assert np.isfinite(total16)
  for key in ('loss/rec', 'loss/rew', 'loss/con', 'loss/dyn', 'loss/rep',
              'loss/value', 'loss/repval', 'loss/ensemble'):
    a, b = float(metrics32[key]), float(metrics16[key])
    assert abs(a - b) <= 0.01 * abs(a) + 1e-3, (key, a, b)
  nets_ = {}
  for key in g32:
    net = key.split('/')[1]
    a = np.asarray(g32[key], np.float64).ravel()
    b = np.asarray(g16[key], np.float64).ravel()
    assert np.all(np.isfinite(b)), key
    dot, na, nb = nets_.get(net, (0.0, 0.0, 0.0))
    nets_[net] = (dot + a @ b, na + a @ a, nb + b @ b)
  for net, (dot, na, nb) in nets_.items():
    if na == 0:  # Heads with zero-initialised outputs and no signal yet.
      continue
    cosine = dot / np.sqrt(na * nb)
    assert cosine > 0.98, (net, cosine)


def _float32_quantities(model, data, inputs):
  """The dtypes of the quantities that must be float32, traced with the
  current compute dtype (nothing runs)."""
  def probe():
    obs, entries = model._observe(data)
    feat = model.dyn.feat(entries)
    rew = model.rew(feat)
    pol = model.pol(feat)
    ret = jnp.ones(feat.shape[:2], f32)
    return {
        'feat': feat,
        'deter': entries['deter'],
        'prior logits': entries['logit'],
        'two-hot bins': rew.bins,
        'two-hot probs': rew.probs,
        'two-hot expectation': rew.pred(),
        'value expectation': model.val(feat).pred(),
        'continue prob': model.con(feat).prob(),
        'log-probabilities': sum(
            d.logp(data['action'][:, 1:]) for d in pol.values()),
        'policy entropy': sum(d.entropy() for d in pol.values()),
        'return scale (percentiles)': model.retnorm(ret),
        'kl': model.dyn.losses(entries)['dyn'],
        'total loss': model.loss(data, inputs)[0],
    }
  state = jax.eval_shape(lambda: nj.pure(probe)({}, create=True, seed=np.uint32([0, 0]))[0])
  return jax.eval_shape(lambda s: nj.pure(probe)(s, seed=np.uint32([0, 0]))[1], state)


def test_float32_quantities_stay_float32_under_bfloat16(compute_dtype):
  model, config = _model(EVERYTHING)
  data = _numpy_batch(model, config, 0)
  inputs = _host_inputs(model)
  compute_dtype('bfloat16')
  shapes = _float32_quantities(model, data, inputs)
  assert shapes.pop('feat').dtype == bf16  # The features are 16-bit.
  for name, value in shapes.items():
    assert value.dtype == f32, (name, value.dtype)


def _intermediates(jaxpr, out=None):
  """Every equation of a jaxpr and its sub-jaxprs (scan bodies, pjit,
  custom VJPs, cond branches)."""
  out = [] if out is None else out
  for eqn in jaxpr.eqns:
    out.append(eqn)
    for param in eqn.params.values():
      subs = param if isinstance(param, (tuple, list)) else [param]
      for sub in subs:
        # Duck-typed: the jaxpr classes moved between JAX releases.
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          _intermediates(sub, out)
  return out


def _step_values(model, data, inputs, state, dtype, compute_dtype):
  """(float32 matmul and convolution outputs as (bytes, shape), bytes of
  every floating value) of one traced train step."""
  compute_dtype(dtype)
  seed = np.uint32([0, 0])
  fn = lambda s, d: nj.pure(model.train)(s, d, inputs, seed=seed)
  jaxpr = jax.make_jaxpr(fn)(state, data)
  matmuls32, sizes = [], []
  for eqn in _intermediates(jaxpr.jaxpr):
    for var in eqn.outvars:
      aval = var.aval
      if not hasattr(aval, 'dtype') or not jnp.issubdtype(
          aval.dtype, jnp.floating):
        continue
      size = int(np.prod(aval.shape)) * jnp.dtype(aval.dtype).itemsize
      sizes.append(size)
      if eqn.primitive.name in ('dot_general', 'conv_general_dilated') and \
          aval.dtype == f32:
        matmuls32.append((size, aval.shape))
  return matmuls32, sorted(sizes, reverse=True)


def test_activations_are_16_bit(compute_dtype):
  """Every value the traced train step produces, by dtype and size. The
  parameters stay float32 and are cast where they are used; every matmul
  and convolution over activations runs in bfloat16: the float32 ones
  left are kernel-sized (the merged kernels of the fast upsampling and
  pooling convolutions, at most 16x a parameter, and the float32 sum of the
  CPU path's convolution kernel gradient). The largest values (the image
  activations and their gradient patches) take about half the bytes of the
  float32 step's."""
  model, config = _model(
      ['--configs', 'debug', '--task', 'dummy_disc', '--batch_size', '4'])
  data = _numpy_batch(model, config, 0)
  state = _float32_state(model, data)
  inputs = _host_inputs(model)
  param = max(int(np.prod(v.shape)) * 4 for v in state.values())
  matmuls16, sizes16 = _step_values(model, data, inputs, state, bf16,
                                    compute_dtype)
  matmuls32, sizes32 = _step_values(model, data, inputs, state, f32,
                                    compute_dtype)
  assert max(size for size, _ in matmuls32) > 10 * param  # Can fail.
  for size, shape in matmuls16:
    assert size <= 16 * param, shape
  assert sum(sizes16[:10]) < 0.6 * sum(sizes32[:10])
