"""Latent reward disagreement (dreamerv3/intrinsic.py): members against a
per-member loop, the ema and perturbed_starts members against the RSSM's
block-GRU core written in NumPy, reward types and schedules against their
formulas, the disabled extension against the plain agent, and one agent
with masked loss, intrinsic reward and a priority signal trained end to end
(built once)."""

import collections
import functools
import math
import re

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np
import pytest

from dreamerv3 import extensions, intrinsic
from dreamerv3 import main as dmain
from dreamerv3.agent import Dreamer
from embodied import jax as ejax
from tests.helpers import fill_params, model_spaces, zeros_batch

SEED = np.uint32([0, 0])


spaces = model_spaces


def dummy_data(model, length=4, batch=2):
  return zeros_batch(model, batch, length)


# Members.

def ensemble_state(K=3, layers=2, units=5, din=4, dout=6):
  module = intrinsic.Ensemble(dout, size=K, layers=layers, units=units,
                              name='ens')
  x = np.random.default_rng(0).normal(size=(7, din)).astype(np.float32)
  state = nj.init(module)({}, x, seed=SEED)
  # Distinct biases and norm scales, so a mix-up of members shows.
  rng = np.random.default_rng(1)
  state = {k: v + rng.normal(0, 0.3, v.shape).astype(np.float32)
           for k, v in state.items()}
  return module, state, x


def loop_members(state, x, K, layers, eps=1e-4):
  """Each member on its own, in NumPy."""
  outs = []
  for k in range(K):
    h = x.astype(np.float64)
    for i in range(layers + 1):
      h = h @ state[f'ens/kernel{i}'][k] + state[f'ens/bias{i}'][k]
      if i < layers:
        h = h / np.sqrt((h * h).mean(-1, keepdims=True) + eps)
        h = h * state[f'ens/scale{i}'][k]
        h = h / (1 + np.exp(-h))
    outs.append(h)
  return np.stack(outs)


@pytest.mark.parametrize('layers', [0, 2])
def test_members_equal_per_member_loop(layers):
  module, state, x = ensemble_state(layers=layers)
  _, got = jax.jit(nj.pure(module))(state, x, seed=SEED)
  want = loop_members({k: np.asarray(v) for k, v in state.items()}, x, 3,
                      layers)
  assert got.shape == (3, 7, 6)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_identical_members_give_zero_disagreement():
  module, state, x = ensemble_state()
  same = {k: jnp.repeat(v[:1], 3, 0) for k, v in state.items()}
  _, pred = jax.jit(nj.pure(module))(same, x, seed=SEED)
  ref = np.zeros(pred.shape[1:], np.float32)
  np.testing.assert_array_equal(pred[0], pred[1])
  np.testing.assert_array_equal(pred[0], pred[2])
  for kind in ('disagreement', 'max_disagreement'):
    # Zero up to the rounding of the mean over members.
    np.testing.assert_allclose(
        np.asarray(intrinsic.bonus(pred, ref, kind)), 0.0, atol=1e-12)
  # And not zero for distinct members.
  _, pred = jax.jit(nj.pure(module))(state, x, seed=SEED)
  assert float(intrinsic.bonus(pred, ref, 'disagreement').min()) > 0


# Reward types.

def test_reward_types_equal_their_formulas():
  # K = 3 members, 2 steps, rewards as scalars (D = 1).
  r = np.array([[1.0, 0.0], [2.0, 0.5], [6.0, 1.0]], np.float32)
  own = np.array([2.0, 1.5], np.float32)
  mean = r.mean(0)  # [3, 0.5]
  var = ((r - mean) ** 2).mean(0)  # [14/3, 1/6]
  np.testing.assert_allclose(var, [14 / 3, 1 / 6], rtol=1e-6)
  want = {
      'disagreement': var,
      'prediction_error': (mean - own) ** 2,  # [1, 1]
      'max_disagreement': ((r - mean) ** 2).max(0),  # [9, 0.25]
  }
  np.testing.assert_allclose(want['max_disagreement'], [9, 0.25])
  for kind, value in want.items():
    got = intrinsic.bonus(jnp.asarray(r[..., None]),
                          jnp.asarray(own[..., None]), kind)
    np.testing.assert_allclose(np.asarray(got), value, rtol=1e-6,
                               err_msg=kind)
  # State disagreement: squared deviations averaged over feature dims.
  x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
  ref = np.zeros((5, 3), np.float32)
  got = intrinsic.bonus(jnp.asarray(x), jnp.asarray(ref), 'disagreement')
  np.testing.assert_allclose(np.asarray(got), x.var(0).mean(-1), rtol=1e-5)


# Schedules.

def test_exp_decay_schedule_equals_formula():
  host = intrinsic.Schedule('exp_decay', 0.4, 0.9, 50.0, 0.1, 3, 1.0, 0, 1)
  tran = {'is_first': False, 'is_last': False, 'reward': 0.0}
  for step in range(200):
    want = 1 - (0.1 + (0.6 - 0.1) * math.exp(-step / 50.0))
    assert host.value() == pytest.approx(want)
    assert host.inputs()['lambda'] == np.float32(want)
    host.on_step(tran, 0)
  assert host.inputs()['steps'] == 200
  assert intrinsic.Schedule(
      'constant', 0.3, 0.9, 1.0, 0.1, 3, 1.0, 0, 1).value() == 0.3


def loop_slope(returns, alpha, window, start, temp, lo, hi):
  """The slope_ema lambda after each episode, in plain Python."""
  out, emas, ema = [], [], None
  for ret in returns:
    ema = ret if ema is None else alpha * ret + (1 - alpha) * ema
    emas.append(ema)
    if len(emas) < window:
      out.append(start)
      continue
    w = emas[-window:]
    low, high = min(w), max(w)
    scaled = [(e - low) / (high - low) if high > low else 0.0 for e in w]
    slope = scaled[-1] - scaled[0]
    out.append(min(hi, max(lo, 1 / (1 + math.exp(-slope / temp)))))
  return out


def test_slope_ema_schedule_equals_loop():
  rng = np.random.default_rng(0)
  returns = list(np.concatenate([
      np.linspace(10, 0, 8), np.full(6, 3.0), np.linspace(0, 20, 10)]) +
      rng.normal(0, 0.5, 24))
  args = ('slope_ema', 0.25, 0.9, 1.0, 0.3, 5, 0.5, 0.2, 0.8)
  host = intrinsic.Schedule(*args)
  want = loop_slope(returns, 0.3, 5, 0.25, 0.5, 0.2, 0.8)
  got = []
  for ret in returns:
    host.add_return(ret)
    got.append(host.value())
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert got[:4] == [0.25] * 4  # Window not yet full: the start value.
  assert min(got[4:]) == pytest.approx(0.2) or min(got[4:]) > 0.2
  assert max(got) <= 0.8 and len(set(got[4:])) > 2
  # A flat window has slope 0: sigmoid(0) = 0.5.
  flat = intrinsic.Schedule('slope_ema', 0.1, 0.9, 1.0, 0.5, 4, 1.0, 0, 1)
  for _ in range(4):
    flat.add_return(7.0)
  assert flat.value() == 0.5


def test_schedule_counts_episodes_from_env_steps():
  host = intrinsic.Schedule('slope_ema', 0.1, 0.9, 1.0, 1.0, 2, 1.0, 0, 1)
  # Two workers; the first step's reward does not count (as in Episodes).
  steps = [(0, True, False, 5.0), (1, True, False, 0.0), (0, False, False, 1.0),
           (1, False, False, 2.0), (0, False, True, 3.0), (1, False, True, 1.0)]
  for worker, first, last, reward in steps:
    host.on_step({'is_first': first, 'is_last': last, 'reward': reward},
                 worker)
  assert host.steps == 6 and list(host.emas) == [4.0, 3.0]
  # ema_alpha 1: the EMA is the last return; slope -1 -> sigmoid(-1).
  assert host.value() == pytest.approx(1 / (1 + math.e))
  data = host.save()
  other = intrinsic.Schedule('slope_ema', 0.1, 0.9, 1.0, 1.0, 2, 1.0, 0, 1)
  other.load(data)
  assert other.save() == data and other.value() == host.value()


# Config.

def test_config_checks_and_structure():
  for flags, key in [
      (['--agent.intrinsic.learn_strategy', 'boost'], 'learn_strategy'),
      (['--agent.intrinsic.reward_type', 'x'], 'reward_type'),
      (['--agent.intrinsic.lambda_min', '0.9', '--agent.intrinsic.lambda_max',
        '0.1'], 'lambda_min'),
      (['--agent.intrinsic.ensemble_size', '1'], 'ensemble_size'),
      (['--agent.intrinsic.lambda_start', '1.5'], 'lambda_start')]:
    config = dmain.parse(['--configs', 'debug'] + flags)
    with pytest.raises(dmain.ConfigError, match=key):
      dmain.check_values(config)
  for block in ('disagreement_exp_decay', 'disagreement_slope_ema',
                'xp_disagreement_exp_decay', 'xp_disagreement_slope_ema'):
    config = dmain.parse(['--configs', 'debug', block])
    dmain.check_values(config)
    assert config.intrinsic.enabled
  config = dmain.parse(['--configs', 'debug', 'xp_disagreement_slope_ema'])
  assert config.replay.fracs.priority == 1.0
  assert config.intrinsic.scheduling_strategy == 'slope_ema'
  # Structural: a logdir from before the extension had it off.
  rules = dmain.structural_keys(dmain.parse(['--task', 'dummy_disc']))
  legacy = lambda key: next(l for p, l in rules if re.fullmatch(p, key))
  assert legacy('intrinsic.enabled') is False
  assert legacy('intrinsic.ensemble_size') is None


# The disabled extension is the plain agent.

def lowered_train(argv, plain=False, monkeypatch=None):
  config = dmain.parse(['--configs', 'debug', '--task', 'dummy_vector'] + argv)
  obs_space, act_space = spaces(config)
  if plain:  # The agent with no extension module at all.
    monkeypatch.setattr(extensions, 'install', lambda *args: [])
  model = Dreamer(obs_space, act_space, dmain.agent_config(config),
                  name='agent')
  if plain:
    monkeypatch.undo()
  data = dummy_data(model)
  shapes = jax.eval_shape(lambda d: nj.pure(model.train)(
      {}, d, create=True, seed=SEED)[0], data)
  state = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
  text = jax.jit(nj.pure(model.train)).lower(
      state, data, seed=SEED).as_text()
  return model, shapes, text


def test_disabled_is_bit_identical_to_plain_agent(monkeypatch):
  """use_intrinsic False (with other intrinsic options changed too) gives
  the very same train-step program as the agent without any extension:
  same parameters (names, shapes) and the same XLA computation, hence the
  same loss and parameters after a step, bit for bit, for any seed."""
  plain, plain_shapes, plain_text = lowered_train([], True, monkeypatch)
  assert plain.exts == [] and not plain.host
  off, off_shapes, off_text = lowered_train(
      ['--agent.intrinsic.ensemble_size', '3',
       '--agent.intrinsic.learn_strategy', 'ema'])
  assert off.exts == [] and not off.host
  assert {k: (s.shape, s.dtype) for k, s in off_shapes.items()} == {
      k: (s.shape, s.dtype) for k, s in plain_shapes.items()}
  assert off_text == plain_text
  _, on_shapes, on_text = lowered_train(['--agent.use_intrinsic', 'True'])
  assert any(k.startswith('agent/intrinsic/') for k in on_shapes)
  assert on_text != plain_text


@pytest.mark.parametrize('strategy,exploration,reward,task', [
    ('ema', 'state_disagreement', 'max_disagreement', 'dummy_cont'),
    ('perturbed_starts', 'reward_variance', 'prediction_error', 'dummy_cont'),
])
def test_other_strategies_trace(strategy, exploration, reward, task):
  """The train step with ema or perturbed_starts members traces, adds no
  loss and nothing trainable (their numbers: the NumPy core tests below)."""
  config = dmain.parse([
      '--configs', 'debug', '--task', task, '--agent.use_intrinsic', 'True',
      '--agent.intrinsic.learn_strategy', strategy,
      '--agent.intrinsic.exploration_type', exploration,
      '--agent.intrinsic.reward_type', reward, '--agent.imag_last', '2'])
  obs_space, act_space = spaces(config)
  model = Dreamer(obs_space, act_space, dmain.agent_config(config),
                  name='agent')
  assert model.opt.modules[-1] is model.val  # Nothing trainable added.
  shapes, (outs_, metrics) = jax.eval_shape(lambda d: nj.pure(model.train)(
      {}, d, create=True, seed=SEED), dummy_data(model))
  assert 'intrinsic/disagreement' in metrics
  assert 'loss/ensemble' not in metrics
  ema = [k for k in shapes if k.startswith('agent/intrinsic/ema')]
  assert bool(ema) == (strategy == 'ema')
  for key in ema:
    assert shapes[key].shape[0] == 5


# ema and perturbed_starts against the block GRU written in NumPy.

def np_core(p, deter, stoch, action, blocks, eps=1e-4):
  """RSSM.core (rms norms, SiLU) in float64 with one loop over blocks; p
  maps the core's parameter names without the module prefix
  ('indeter/kernel', 'dyn0norm/scale', 'gates/bias', ...) to arrays."""
  silu = lambda x: x / (1 + np.exp(-x))
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  rms = lambda x, scale: x / np.sqrt((x * x).mean(-1, keepdims=True) +
                                     eps) * scale
  N, D = deter.shape
  d = D // blocks
  deter = deter.astype(np.float64)
  action = action / np.maximum(1.0, np.abs(action))
  inputs = []
  for name, x in (('indeter', deter), ('instoch', stoch.reshape((N, -1))),
                  ('inact', action)):
    x = x @ p[f'{name}/kernel'] + p[f'{name}/bias']
    inputs.append(silu(rms(x, p[f'{name}norm/scale'])))
  shared = np.concatenate(inputs, -1)
  # Block j of the first layer reads its own slice of deter and all inputs.
  xs = [np.concatenate([deter[:, j * d:(j + 1) * d], shared], -1)
        for j in range(blocks)]
  i = 0
  while f'dyn{i}/kernel' in p:
    kernel, bias = p[f'dyn{i}/kernel'], p[f'dyn{i}/bias']
    o = kernel.shape[-1]
    x = np.concatenate([xs[j] @ kernel[j] + bias[j * o:(j + 1) * o]
                        for j in range(blocks)], -1)
    x = silu(rms(x, p[f'dyn{i}norm/scale']))  # Norm across all blocks.
    xs = [x[:, j * o:(j + 1) * o] for j in range(blocks)]
    i += 1
  out = []
  for j in range(blocks):
    g = xs[j] @ p['gates/kernel'][j] + p['gates/bias'][
        j * 3 * d:(j + 1) * 3 * d]
    reset, cand, update = g[:, :d], g[:, d:2 * d], g[:, 2 * d:]
    cand = np.tanh(sigmoid(reset) * cand)
    update = sigmoid(update - 1)
    out.append(update * cand + (1 - update) * deter[:, j * d:(j + 1) * d])
  return np.concatenate(out, -1)


def strategy_model(strategy, *flags):
  config = dmain.parse([
      '--configs', 'debug', '--task', 'dummy_cont', '--agent.use_intrinsic',
      'True', '--agent.intrinsic.learn_strategy', strategy, *flags])
  obs_space, act_space = spaces(config)
  model = Dreamer(obs_space, act_space, dmain.agent_config(config),
                  name='agent')
  assert (model.dyn.norm, model.dyn.act) == ('rms', 'silu')  # As np_core.
  return model, model.exts[0]


def rollout(model, N=3, H=4, seed=0):
  """An imagined rollout as imag_reward receives it: states [N, H + 1],
  continuous actions partly outside [-1, 1], predicted rewards."""
  rng = np.random.default_rng(seed)
  dyn = model.dyn
  states = {
      'deter': rng.normal(0, 1, (N, H + 1, dyn.deter)).astype(np.float32),
      'stoch': np.eye(dyn.classes, dtype=np.float32)[
          rng.integers(0, dyn.classes, (N, H + 1, dyn.stoch))]}
  actions = {'action': rng.normal(0, 1.5, (N, H + 1, 2)).astype(np.float32)}
  reward = jnp.asarray(rng.normal(0, 1, (N, H + 1)), jnp.float32)
  return states, actions, reward


def rows(states, actions):
  """imag_reward's predict() inputs: steps t' < H as rows [N * H, ...]."""
  flat = lambda x: x[:, :-1].reshape((-1, *x.shape[2:]))
  return flat(states['deter']), flat(states['stoch']), flat(actions['action'])


def strategy_state(model, ext, seed=0):
  """Random parameters of the core, the reward head and the extension
  (EMA copies spread around the core, so that every member differs)."""
  states, actions, reward = rollout(model)
  inputs = {'lambda': np.float32(0.5), 'steps': np.float32(0)}

  def create(states, actions, reward, inputs):
    model.dyn.core(*rows(states, actions))  # The core before its copies.
    return ext.imag_reward(states, actions, None, reward, inputs)

  state = fill_params(create, states, actions, reward, inputs, seed=seed)
  rng = np.random.default_rng(seed + 1)
  for key in list(state):
    if key.startswith('agent/intrinsic/ema'):
      value = state[key]
      state[key] = value + rng.normal(0, 0.3, value.shape).astype(np.float32)
  # Running magnitudes of a fresh agent.
  for key in ('count', 'ext_mag', 'bonus_mag'):
    state[f'agent/intrinsic/{key}'] = jnp.zeros((), jnp.float32)
  # Two-hot logits that fall off away from the middle bin keep the rewards
  # near 1 (random logits put mass on the outer bins, symexp(20) ~ 5e8).
  bins = state['agent/rew/out/bias'].shape[0]
  state['agent/rew/out/bias'] = jnp.asarray(
      -0.5 * np.abs(np.arange(bins) - bins // 2), jnp.float32)
  return state


def core_params(model, state):
  """The core's state keys (sorted) and a map from their values to the
  prefix-free names np_core reads."""
  prefix = model.dyn.core.path + '/'
  keys = sorted(prefix + k for k in nj.pure(
      lambda: model.dyn.core.values)(state)[1])
  assert keys and all(k.startswith(prefix) for k in keys)
  return keys, lambda values: {
      k[len(prefix):]: np.asarray(v, np.float64)
      for k, v in zip(keys, values)}


def test_ema_members_are_the_core_with_their_copies():
  """ema: member k's next deter is the block GRU run with copy k's
  parameters; fresh copies are the core itself."""
  model, ext = strategy_model(
      'ema', '--agent.intrinsic.ensemble_size', '3', '--agent.dyn.dynlayers',
      '2')
  state = strategy_state(model, ext)
  keys, named = core_params(model, state)
  assert {k.split('/')[-2] for k in keys} == {
      'indeter', 'instoch', 'inact', 'indeternorm', 'instochnorm',
      'inactnorm', 'dyn0', 'dyn0norm', 'dyn1', 'dyn1norm', 'gates'}
  copies = [state[f'agent/intrinsic/ema{i}'] for i in range(len(keys))]
  assert all(c.shape == (3, *state[k].shape) for c, k in zip(copies, keys))
  states, actions, _ = rollout(model)
  deter, stoch, action = rows(states, actions)
  predict = jax.jit(nj.pure(ext.predict))
  _, pred = predict(state, deter, stoch, action, seed=SEED)
  assert pred.shape == (3, len(deter), model.dyn.deter)
  blocks = model.dyn.blocks
  for k in range(3):
    want = np_core(named([c[k] for c in copies]), deter, stoch, action, blocks)
    np.testing.assert_allclose(np.asarray(pred[k]), want, rtol=1e-4,
                               atol=1e-5, err_msg=f'member {k}')
  # The reference is the RSSM's own core too.
  _, own = jax.jit(nj.pure(model.dyn.core))(state, deter, stoch, action)
  want = np_core(named([state[k] for k in keys]), deter, stoch, action, blocks)
  np.testing.assert_allclose(np.asarray(own), want, rtol=1e-4, atol=1e-5)
  for k in range(3):  # The spread copies predict something else.
    assert np.abs(np.asarray(pred[k]) - want).max() > 1e-2
  # Created without copies in the state, every copy is the core.
  fresh = {k: v for k, v in state.items()
           if not k.startswith('agent/intrinsic/ema')}
  made, pred = jax.jit(functools.partial(nj.pure(ext.predict), create=True))(
      fresh, deter, stoch, action, seed=SEED)
  for i, key in enumerate(keys):
    np.testing.assert_array_equal(
        made[f'agent/intrinsic/ema{i}'], np.repeat(state[key][None], 3, 0))
  for k in range(3):
    np.testing.assert_allclose(np.asarray(pred[k]), want, rtol=1e-4,
                               atol=1e-5)


def test_ema_copies_move_toward_the_core_at_their_rates():
  """ema: after_train() sets copy k to (1 - rate_k) copy_k + rate_k core,
  rates geometric from ema_rate_min to ema_rate_max, and the members then
  predict with the moved copies."""
  K, rates = 4, np.array([0.01, 0.04, 0.16, 0.64])  # Ratio 4 per member.
  model, ext = strategy_model(
      'ema', '--agent.intrinsic.ensemble_size', str(K),
      '--agent.intrinsic.ema_rate_min', '0.01',
      '--agent.intrinsic.ema_rate_max', '0.64')
  state = strategy_state(model, ext, seed=3)
  keys, named = core_params(model, state)
  states, actions, _ = rollout(model, seed=3)
  deter, stoch, action = rows(states, actions)

  def step(deter, stoch, action):
    ext.after_train()
    return ext.predict(deter, stoch, action)

  new, pred = jax.jit(nj.pure(step))(state, deter, stoch, action, seed=SEED)
  moved = []
  for i, key in enumerate(keys):
    old = np.asarray(state[f'agent/intrinsic/ema{i}'], np.float64)
    core = np.asarray(state[key], np.float64)
    want = np.stack([(1 - r) * old[k] + r * core for k, r in enumerate(rates)])
    np.testing.assert_allclose(np.asarray(new[f'agent/intrinsic/ema{i}']),
                               want, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(new[key], state[key])  # Core untouched.
    moved.append(want)
  for k in range(K):
    want = np_core(named([m[k] for m in moved]), deter, stoch, action,
                   model.dyn.blocks)
    np.testing.assert_allclose(np.asarray(pred[k]), want, rtol=1e-4,
                               atol=1e-5, err_msg=f'member {k}')


def identity_core(state, model):
  """Parameters under which the core returns its deter input: all gates at
  -100, so the update gate is sigmoid(-101) = 0 in float32."""
  probe = dict(state)
  prefix = model.dyn.core.path + '/gates/'
  probe[prefix + 'kernel'] = jnp.zeros_like(state[prefix + 'kernel'])
  probe[prefix + 'bias'] = jnp.full_like(state[prefix + 'bias'], -100.0)
  return probe


def test_perturbed_starts_noise_is_seeded_gaussian():
  """perturbed_starts: through a core that returns its input, member k
  from a zero deter is its noise: N(0, perturb_std^2), independent across
  members, entries and seeds, the same for the same seed, and not a
  function of the deter (the members of a nonzero deter are deter +
  the same noise)."""
  std, K = 0.3, 4
  model, ext = strategy_model(
      'perturbed_starts', '--agent.intrinsic.perturb_std', str(std),
      '--agent.intrinsic.ensemble_size', str(K))
  probe = identity_core(strategy_state(model, ext), model)
  states, actions, _ = rollout(model, N=16)  # 64 rows.
  deter, stoch, action = rows(states, actions)
  predict = jax.jit(nj.pure(ext.predict))
  zeros = np.zeros_like(deter)
  draw = lambda seed, h=zeros: np.asarray(predict(
      probe, h, stoch, action, seed=np.uint32([0, seed]))[1], np.float64)
  noises = [draw(seed) for seed in range(4)]
  assert noises[0].shape == (K, 64, model.dyn.deter)
  np.testing.assert_array_equal(draw(0), noises[0])  # Same seed, same noise.
  np.testing.assert_allclose(draw(0, deter) - deter, noises[0], atol=1e-6)
  x = np.stack(noises).ravel()
  n = x.size  # 32768 draws.
  assert abs(x.mean()) < 4 * std / np.sqrt(n)
  assert x.std() == pytest.approx(std, rel=0.03)
  # Gaussian, not just the right variance: 68.3% within one std (uniform
  # noise would give 57.7%), 95.4% within two.
  assert np.mean(np.abs(x) < std) == pytest.approx(0.6827, abs=0.015)
  assert np.mean(np.abs(x) < 2 * std) == pytest.approx(0.9545, abs=0.01)
  # Members, rows and seeds draw independent noise.
  corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]
  for a, b in [(noises[0][0], noises[0][1]), (noises[0][1], noises[0][3]),
               (noises[0], noises[1]), (noises[2], noises[3]),
               (noises[0][:, :32], noises[0][:, 32:])]:
    assert abs(corr(a, b)) < 0.05
  per_member = noises[0].reshape((K, -1)).std(-1)
  np.testing.assert_allclose(per_member, std, rtol=0.1)


def test_perturbed_starts_members_are_the_core_from_noisy_deter():
  """perturbed_starts: member k is the core (real parameters) from
  deter + noise_k, with the noise the same seed draws (read through an
  identity core)."""
  model, ext = strategy_model(
      'perturbed_starts', '--agent.intrinsic.perturb_std', '0.5',
      '--agent.intrinsic.ensemble_size', '3')
  state = strategy_state(model, ext)
  keys, named = core_params(model, state)
  states, actions, _ = rollout(model)
  deter, stoch, action = rows(states, actions)
  predict = jax.jit(nj.pure(ext.predict))
  noise = np.asarray(predict(identity_core(state, model),
                             np.zeros_like(deter), stoch, action,
                             seed=SEED)[1], np.float64)
  _, pred = predict(state, deter, stoch, action, seed=SEED)
  params = named([state[k] for k in keys])
  plain = np_core(params, deter, stoch, action, model.dyn.blocks)
  for k in range(3):
    want = np_core(params, deter + noise[k], stoch, action, model.dyn.blocks)
    np.testing.assert_allclose(np.asarray(pred[k]), want, rtol=1e-4,
                               atol=1e-5, err_msg=f'member {k}')
    assert np.abs(want - plain).max() > 1e-2  # The noise matters.


def np_bonus(x, ref, reward_type):
  """The bonus per row from members x [K, M, D] and the agent's own ref
  [M, D], one row and one member at a time."""
  K, M, _ = x.shape
  out = np.zeros(M)
  for m in range(M):
    mean = sum(x[k, m] for k in range(K)) / K
    dev = [((x[k, m] - mean) ** 2).mean() for k in range(K)]
    out[m] = {'disagreement': sum(dev) / K,
              'prediction_error': ((mean - ref[m]) ** 2).mean(),
              'max_disagreement': max(dev)}[reward_type]
  return out


REWARD_TYPES = ('disagreement', 'prediction_error', 'max_disagreement')


@pytest.mark.parametrize('strategy', ['ema', 'perturbed_starts'])
def test_strategy_rewards_equal_numpy(strategy):
  """imag_reward with ema or perturbed_starts members: the NumPy core's
  member predictions, the reward head's pred() on them, every bonus
  formula for both exploration types, and the mixed reward with the bonus
  normalised by running magnitudes over two steps."""
  K, lam, scale = 3, 0.3, 0.7
  flags = ['--agent.intrinsic.ensemble_size', str(K),
           '--agent.intrinsic.perturb_std', '0.5',
           '--agent.intrinsic.scale', str(scale)]
  model, ext = strategy_model(strategy, *flags)
  state = strategy_state(model, ext, seed=5)
  keys, named = core_params(model, state)
  N, H = 3, 4
  states, actions, reward = rollout(model, N, H, seed=5)
  deter, stoch, action = rows(states, actions)
  action = np.clip(action, -1, 1)  # prep_action clips continuous actions.
  blocks, params = model.dyn.blocks, named([state[k] for k in keys])
  if strategy == 'ema':
    copies = [state[f'agent/intrinsic/ema{i}'] for i in range(len(keys))]
    nxt = np.stack([np_core(named([c[k] for c in copies]), deter, stoch,
                            action, blocks) for k in range(K)])
  else:
    # imag_reward's first random draw is predict()'s noise, so the same
    # step seed gives it the noise read here.
    noise = np.asarray(jax.jit(nj.pure(ext.predict))(
        identity_core(state, model), np.zeros_like(deter), stoch, action,
        seed=SEED)[1], np.float64)
    nxt = np.stack([np_core(params, deter + noise[k], stoch, action, blocks)
                    for k in range(K)])
  nxt_stoch = states['stoch'][:, 1:].reshape((N * H, *stoch.shape[1:]))
  _, rk = nj.pure(lambda h, z: model.rew(model.dyn.feat(
      {'deter': h, 'stoch': z})).pred())(
          state, nxt.astype(np.float32), np.repeat(nxt_stoch[None], K, 0))
  rk = np.asarray(rk, np.float64)  # [K, N * H]
  own = states['deter'][:, 1:].reshape((N * H, -1)).astype(np.float64)
  inputs = {'lambda': np.float32(lam), 'steps': np.float32(0)}
  rate = 0.2
  # ema's members only differ in their predictions: one reward type each.
  reward_types = REWARD_TYPES if strategy == 'perturbed_starts' else (
      'max_disagreement',)
  for exploration, floor in (('reward_variance', 0.01),
                             ('state_disagreement', 2.0)):  # Floor binds.
    for reward_type in reward_types:
      name = f'{exploration} {reward_type}'
      model, ext = strategy_model(
          strategy, *flags, '--agent.intrinsic.exploration_type',
          exploration, '--agent.intrinsic.reward_type', reward_type,
          '--agent.intrinsic.scale_rate', str(rate),
          '--agent.intrinsic.scale_floor', str(floor))
      # Two train steps (same members, same seed), the second with the
      # rewards tripled: the running magnitudes, debiased by 1 - 0.8^n.
      ext_mag = bonus_mag = 0.0
      new = state
      for step, factor in enumerate((1.0, 3.0)):
        rew = reward * factor
        new, (mixed, metrics) = nj.pure(ext.imag_reward)(
            new, states, actions, None, rew, inputs, seed=SEED)
        r_ext = np.asarray(rew[:, 1:], np.float64).ravel()
        if exploration == 'reward_variance':
          b = np_bonus(rk[..., None], r_ext[:, None], reward_type)
        else:
          b = np_bonus(nxt, own, reward_type)
        ext_mag = (1 - rate) * ext_mag + rate * np.abs(r_ext).mean()
        bonus_mag = (1 - rate) * bonus_mag + rate * b.mean()
        debias = 1 - (1 - rate) ** (step + 1)
        s = scale * max(ext_mag / debias, floor) / max(
            bonus_mag / debias, 1e-8)
        want = lam * r_ext + (1 - lam) * (rk.mean(0) + s * b)
        assert b.min() > 0, name
        np.testing.assert_allclose(
            float(metrics['intrinsic/disagreement']), b.mean(), rtol=1e-4,
            err_msg=name)
        np.testing.assert_allclose(float(metrics['intrinsic/scale']), s,
                                   rtol=1e-4, err_msg=name)
        np.testing.assert_array_equal(mixed[:, 0], rew[:, 0])
        np.testing.assert_allclose(np.asarray(mixed[:, 1:]).ravel(), want,
                                   rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize('layers,head_layers', [(1, 1), (2, 2)])
def test_factored_member_rewards_equal_the_direct_path(layers, head_layers):
  """The reward of every member through the factored first head layer
  equals the reward head on the formed (h_k, z') (random parameters, so
  every term counts)."""
  config = dmain.parse([
      '--configs', 'debug', '--task', 'dummy_disc', '--agent.use_intrinsic',
      'True', '--agent.intrinsic.layers', str(layers),
      '--agent.rewhead.layers', str(head_layers)])
  obs_space, act_space = spaces(config)
  model = Dreamer(obs_space, act_space, dmain.agent_config(config),
                  name='agent')
  ext = model.exts[0]
  assert ext._factored()
  state = fill_params(model.loss, dummy_data(model))
  rng = np.random.default_rng(0)
  state = {k: v + rng.normal(0, 0.3, v.shape).astype(v.dtype)
           if k.startswith(('agent/intrinsic/', 'agent/rew/')) else v
           for k, v in state.items()}
  N, dyn = 9, model.dyn
  deter = rng.normal(size=(N, dyn.deter)).astype(np.float32)
  onehot = lambda: jax.nn.one_hot(
      rng.integers(0, dyn.classes, (N, dyn.stoch)), dyn.classes)
  stoch, nxt_stoch = onehot(), onehot()
  action = jax.nn.one_hot(rng.integers(0, 6, N), 6)

  def both():
    factored = ext._member_rewards(deter, stoch, action, nxt_stoch)
    nxt = ext.predict(deter, stoch, action)
    tile = jnp.broadcast_to(nxt_stoch[None], (5, *nxt_stoch.shape))
    direct = model.rew(dyn.feat({'deter': nxt, 'stoch': tile})).pred()
    return factored, direct

  _, (factored, direct) = nj.pure(both)(state, seed=SEED)
  assert factored.shape == direct.shape == (5, N)
  assert float(jnp.std(direct)) > 1e-3  # Members and steps differ.
  # float32 sums in another order: errors scale with the largest reward
  # (~1e7 with these perturbed weights), not with each element.
  scale = float(np.abs(np.asarray(direct)).max())
  np.testing.assert_allclose(np.asarray(factored), np.asarray(direct),
                             rtol=1e-4, atol=1e-6 * scale)


# One agent with masked loss, intrinsic reward and a priority signal.

ARGS = ['--configs', 'debug', '--task', 'dummy_image', '--env.size', '16',
        '16', '--dynamics.masked_loss', 'True', '--agent.use_intrinsic',
        'True', '--replay.priosignal', 'model', '--agent.imag_last', '4',
        '--agent.opt.warmup', '0', '--agent.opt.lr', '1e-3']


@pytest.fixture(scope='module')
def agent():
  config = dmain.parse(ARGS)
  dmain.check_values(config)
  obs_space, act_space = spaces(config)
  return ejax.Agent(Dreamer, obs_space, act_space,
                    dmain.agent_config(config), seed=0)


def image_batch(agent, seed):
  rng = np.random.default_rng(seed)
  data = agent._dummy_batch()
  B, L = data['is_first'].shape
  data['image'] = rng.integers(0, 255, data['image'].shape).astype(np.uint8)
  data['image'][:, 1::2] = data['image'][:, :1]  # Some pixels stay still.
  data['reward'] = rng.normal(0, 1, (B, L)).astype(np.float32)
  data['is_first'][:, 0] = True
  data['action'] = rng.integers(0, 6, (B, L)).astype(np.int32)
  data['stepid'] = np.arange(B * L).reshape(B, L)
  return data


def test_masked_intrinsic_priority_trains(agent):
  assert agent.hosts and set(agent.hosts[0].hosts) == {'intrinsic'}
  assert [e.name for e in agent.model.exts] == [
      'masking', 'intrinsic', 'priority']
  # The optimizer trains the members.
  assert agent.model.exts[1].members in agent.model.opt.modules
  for i in range(2):
    outs, metrics = agent.train(image_batch(agent, i))
    for key, value in metrics.items():
      assert np.all(np.isfinite(value)), key
  assert outs['priority']['value'].shape == (4, 8)
  for key in ('intrinsic/reward_intr', 'intrinsic/reward_ext',
              'intrinsic/disagreement', 'intrinsic/lambda',
              'intrinsic/ensemble_loss', 'loss/ensemble',
              'masking/moving_frac_image'):
    assert key in metrics, key
  assert metrics['intrinsic/lambda'] == np.float32(0.5)
  assert metrics['intrinsic/disagreement'] > 0
  # Each effect is there with the others on. Priorities: one per trained
  # step, positive, not one value for all.
  value = outs['priority']['value']
  assert np.all(value > 0) and np.ptp(value) > 0
  # The mask: still images but for a 4x4 patch that changes at step 4
  # (the first, context step aside): the pixels a NumPy loop finds moving
  # within +-k_steps.
  data = image_batch(agent, 9)
  data['image'][:] = data['image'][:, :1]
  data['image'][:, 4, :4, :4] = 255 - data['image'][:, 4, :4, :4]
  images, k = data['image'][:, 1:], 3
  moving = np.zeros(images.shape, bool)
  for t in range(images.shape[1]):
    for u in range(max(0, t - k), min(images.shape[1], t + k + 1)):
      moving[:, t] |= images[:, t] != images[:, u]
  assert 0 < moving.mean() < 0.1
  _, metrics = agent.train(data)
  assert metrics['masking/moving_frac_image'] == pytest.approx(
      moving.mean(), rel=1e-5)


def test_lambda_changes_without_recompiling(agent):
  host = agent.hosts[0].hosts['intrinsic']
  data = image_batch(agent, 5)
  agent.train(data)
  before = agent.compile_counts()
  seen = []
  for steps in (0, 50_000, 500_000):
    host.steps = steps
    _, metrics = agent.train(data)
    seen.append(float(metrics['intrinsic/lambda']))
  assert agent.compile_counts() == before
  assert seen[0] < seen[1] < seen[2] <= 0.99
  assert seen[1] == pytest.approx(
      intrinsic.exp_decay_lambda(50_000, 0.5, 0.99, 1e5), rel=1e-6)
  host.steps = 0


def test_ensemble_loss_is_each_members_error_on_the_next_state():
  """joint_mlp's loss per trained step t: the members' mean squared error
  in predicting the next posterior deter from (deter_t, stoch_t, the action
  step t + 1 consumes), zero where step t + 1 starts an episode (reference
  in NumPy from the same predictions; a target off by one step fails)."""
  config = dmain.parse([
      '--configs', 'debug', '--task', 'dummy_disc', '--agent.use_intrinsic',
      'True'])
  obs_space, act_space = spaces(config)
  model = Dreamer(obs_space, act_space, dmain.agent_config(config),
                  name='agent')
  ext = next(e for e in model.exts if e.name == 'intrinsic')
  rng = np.random.default_rng(2)
  data = dummy_data(model, length=7, batch=2)
  data['vector'] = rng.normal(size=data['vector'].shape).astype(np.float32)
  data['action'] = rng.integers(0, 6, data['action'].shape).astype(np.int32)
  data['is_first'][:, 0] = True
  data['is_first'][0, 4] = True
  state = fill_params(model.loss, data)

  def parts(d):
    obs, entries = model._observe(d)
    prevact = model._prevact(d)
    losses, _ = ext.losses(obs, entries, None, prevact, {})
    B, T = entries['deter'].shape[:2]
    flat = lambda x: x.reshape((B * (T - 1), *x.shape[2:]))
    pred = ext.predict(flat(entries['deter'][:, :-1]),
                       flat(entries['stoch'][:, :-1]), flat(prevact[:, 1:]))
    return losses['ensemble'], entries['deter'], pred, obs['is_first']

  _, (loss, deter, pred, first) = nj.pure(parts)(state, data, seed=SEED)
  deter, pred = np.asarray(deter, np.float64), np.asarray(pred, np.float64)
  B, T = deter.shape[:2]
  pred = pred.reshape((pred.shape[0], B, T - 1, -1))
  want = np.zeros((B, T - 1))
  for b in range(B):
    for t in range(T - 1):
      if not first[b, t + 1]:
        want[b, t] = ((pred[:, b, t] - deter[b, t + 1]) ** 2).mean()
  np.testing.assert_allclose(np.asarray(loss), want, rtol=1e-4, atol=1e-7)
  assert (want > 0).sum() == B * (T - 1) - 1  # Only the episode start is 0.
  # The same step's state as target gives another loss.
  stale = ((pred - deter[None, :, :-1]) ** 2).mean((0, 3))
  assert not np.allclose(np.asarray(loss), stale * (want > 0), rtol=1e-2)


def test_ensemble_loss_decreases_on_fixed_batch(agent):
  data = image_batch(agent, 7)
  losses = [float(agent.train(data)[1]['loss/ensemble']) for _ in range(6)]
  assert losses[-1] < losses[0], losses


def test_resume_restores_members_and_schedule(agent):
  host = agent.hosts[0].hosts['intrinsic']
  for ret in (1.0, 2.0, 5.0):
    host.add_return(ret)
  host.steps = 1234
  saved, saved_host = agent.save(), agent.hosts[0].save()
  members = {k: v for k, v in saved.items()
             if k.startswith('agent/intrinsic/members/')}
  assert members and all(v.shape[0] == 5 for v in members.values())
  agent.train(image_batch(agent, 9))
  host.add_return(-3.0)
  host.steps = 99
  changed = agent.save()
  assert any(not np.array_equal(changed[k], v) for k, v in members.items())
  agent.load(saved)
  agent.hosts[0].load(saved_host)
  for key, value in agent.save().items():
    np.testing.assert_array_equal(value, saved[key], err_msg=key)
  assert host.steps == 1234 and list(host.emas) == list(
      collections.deque(saved_host['intrinsic']['emas']))
  assert agent.hosts[0].save() == saved_host


def test_loads_a_checkpoint_with_the_core_under_the_rssm(agent):
  """A checkpoint written while the core's layers sat directly under the
  RSSM ('agent/dyn/gates/kernel', and so in the optimizer's names) loads
  into the core submodule: its logdir resumes."""
  saved = agent.save()
  core = [k for k in saved if 'agent/dyn/core/' in k]
  assert any(k.startswith('agent/dyn/core/') for k in core)
  assert any(k.startswith('agent/opt/') for k in core)
  old = {k.replace('agent/dyn/core/', 'agent/dyn/'): v
         for k, v in saved.items()}
  assert not set(old) & set(core)
  agent.train(image_batch(agent, 11))
  assert any(not np.array_equal(agent.save()[k], saved[k]) for k in core)
  agent.load(old)
  for key, value in agent.save().items():
    np.testing.assert_array_equal(value, saved[key], err_msg=key)
