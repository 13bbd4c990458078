"""The full Dreamer agent through the jitted wrapper: training, compile
counts, acting, checkpoints and data parallelism. Builds the agent once per
module (compiling train takes most of this file's time)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import ninjax as nj
import numpy as np
import pytest

from dreamerv3 import main as dmain
from dreamerv3 import priority
from dreamerv3.agent import Dreamer
from embodied import jax as ejax
from tests.helpers import train_shapes, zeros_batch

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARGS = ['--configs', 'debug', '--task', 'dummy_vector']


def agent_config(argv=()):
  """As in main.make_agent, from configs.yaml's debug block."""
  config = dmain.parse(ARGS + list(argv))
  return config, dmain.agent_config(config)


def spaces(config):
  env = dmain.make_env(config, 0)
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  return obs_space, act_space


def random_batch(agent, seed):
  """A batch shaped like agent._dummy_batch() with random contents."""
  rng = np.random.default_rng(seed)
  data = agent._dummy_batch()
  B, L = data['is_first'].shape
  data['vector'] = rng.normal(0, 1, data['vector'].shape).astype(np.float32)
  data['reward'] = rng.normal(0, 1, (B, L)).astype(np.float32)
  data['is_first'] = rng.uniform(size=(B, L)) < 0.1
  data['is_first'][:, 0] = True
  data['is_last'] = np.roll(data['is_first'], -1, 1)
  data['is_last'][:, -1] = False
  data['is_terminal'] = data['is_last'] & (rng.uniform(size=(B, L)) < 0.5)
  space = agent.act_space['action']
  data['action'] = rng.integers(space.low, space.high, (B, L)).astype(
      space.dtype)
  if 'deter' in data:  # Latents written back to replay by earlier steps.
    data['deter'] = rng.normal(0, 0.5, data['deter'].shape).astype(np.float16)
    classes = agent.model.dyn.classes
    data['stoch'] = rng.integers(0, classes, data['stoch'].shape).astype(
        np.int8)
  data['stepid'] = rng.integers(0, 2 ** 31, (B, L))
  return data


def random_obs(agent, batch, seed, first=False):
  rng = np.random.default_rng(seed)
  obs = {k: np.zeros((batch, *s.shape), s.dtype)
         for k, s in agent.obs_space.items()}
  obs['vector'] = rng.normal(0, 1, obs['vector'].shape).astype(np.float32)
  obs['is_first'][:] = first
  return obs


@pytest.fixture(scope='module')
def built(request):
  if any(item.name == 'test_data_parallel_four_devices'
         for item in request.session.items):
    # Start the data-parallel child first: it compiles while we do.
    request.getfixturevalue('data_parallel_proc')
  # With a priority signal, so its test needs no second compile.
  config, aconfig = agent_config(['--replay.priosignal', 'uncertainty'])
  obs_space, act_space = spaces(config)
  agent = ejax.Agent(Dreamer, obs_space, act_space, aconfig, seed=0)
  return agent, config, aconfig


@pytest.fixture(scope='module')
def trained(built):
  """Three train steps on new random batches; the states and metrics."""
  agent = built[0]
  before = agent.save()
  metrics = [agent.train(random_batch(agent, i))[1] for i in range(3)]
  return before, agent.save(), metrics


def test_param_counts_match_the_architecture(built):
  """param_counts() (main.py prints it at start, the benchmarks record it)
  per network against closed forms of the layer sizes the config asks for:
  Linear in*out + out, a norm scale per unit, the block-diagonal GRU's G
  blocks of (D/G + 3 hidden) x D/G; optimizer state is not counted."""
  agent, _, c = built
  lin = lambda i, o: i * o + o
  mlp = lambda i, layers, units: sum(
      lin(i if l == 0 else units, units) + units for l in range(layers))
  head = lambda cfg, out: mlp(feat, cfg.layers, cfg.units) + lin(
      cfg.units, out)
  d = c.dyn
  D, H, G, latent = d.deter, d.hidden, d.blocks, d.stoch * d.classes
  feat = D + latent
  vec = agent.obs_space['vector'].shape[0]
  actions = int(agent.act_space['action'].classes)
  tokens = c.enc.units  # The vector encoder's last layer.
  core = (lin(D, H) + lin(latent, H) + lin(actions, H) + 3 * H +
          sum(G * ((D // G + 3 * H) if i == 0 else D // G) * (D // G) +
              2 * D for i in range(d.dynlayers)) +
          G * (D // G) * (3 * D // G) + 3 * D)
  want = {
      'enc': mlp(vec, c.enc.layers, c.enc.units),
      'dyn': core + mlp(D + tokens, d.obslayers, H) + lin(H, latent) +
             mlp(D, d.imglayers, H) + lin(H, latent),
      'dec': mlp(feat, c.dec.layers, c.dec.units) + lin(c.dec.units, vec),
      'rew': head(c.rewhead, c.rewhead.bins),
      'con': head(c.conhead, 1),
      'pol': head(c.policy, actions),
      'val': head(c.value, c.value.bins),
      'slowval': head(c.value, c.value.bins),
      'retnorm': 2,  # The return percentiles lo and hi.
  }
  assert agent.param_counts() == want
  # Everything in the checkpoint but the optimizer's state.
  state = agent.save()
  opt = [k for k in state if k.startswith('agent/opt/')]
  assert opt
  assert sum(want.values()) == sum(
      v.size for k, v in state.items() if k not in opt)


def test_train_losses_finite(trained):
  _, _, metrics = trained
  for step in metrics:
    for key, value in step.items():
      assert np.all(np.isfinite(value)), (key, value)
    for key in ('loss/dyn', 'loss/rep', 'loss/rec', 'loss/rew', 'loss/con',
                'loss/policy', 'loss/value', 'loss/repval', 'opt/grad_norm'):
      assert key in step, key
    # Free nats clip the KL losses from below.
    assert step['loss/dyn'] >= 1.0 - 1e-6 and step['loss/rep'] >= 1.0 - 1e-6
  assert metrics[0]['opt/grad_norm'] > 0


def test_train_changes_parameters(trained):
  before, after, _ = trained
  assert before.keys() == after.keys()
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  # Every trained network moved (the first warmup step has lr 0, the later
  # ones do not), and so did the slow critic and the return normaliser.
  for net in ('enc', 'dyn', 'dec', 'rew', 'con', 'pol', 'val', 'slowval',
              'retnorm'):
    assert any(k.startswith(f'agent/{net}/') for k in changed), net


def _slow_and_fast(state):
  slow = {k.replace('/slowval/', '/'): v for k, v in state.items()
          if k.startswith('agent/slowval/')}
  fast = {k.replace('/val/', '/'): v for k, v in state.items()
          if k.startswith('agent/val/')}
  assert slow.keys() == fast.keys() and slow
  return slow, fast


def test_slow_critic_starts_as_copy_and_tracks_the_critic(built):
  agent, _, aconfig = built
  # A fresh agent: its slow critic holds the critic's initial parameters.
  fresh = ejax.Agent(Dreamer, agent.obs_space, agent.act_space, aconfig,
                     seed=3)
  slow, fast = _slow_and_fast(fresh.save())
  for key in slow:
    np.testing.assert_array_equal(slow[key], fast[key], err_msg=key)
  # After one update: slow = (1 - rate) * old slow + rate * new critic.
  before = _slow_and_fast(agent.save())[0]
  agent.train(random_batch(agent, 20))
  slow, fast = _slow_and_fast(agent.save())
  rate = aconfig.slow_rate
  moved = 0
  for key in slow:
    want = (1 - rate) * before[key] + rate * fast[key]
    np.testing.assert_allclose(slow[key], want, rtol=1e-5, atol=1e-7,
                               err_msg=key)
    moved += not np.array_equal(slow[key], before[key])
  assert moved


def test_replay_stores_the_policy_latents(built):
  import embodied
  from embodied.core import Driver
  agent, config, _ = built
  # Small chunks, so items also read steps copied into a chunk's prefix.
  replay = embodied.Replay(config.batch_length + config.replay_context,
                           capacity=1000, chunksize=16)
  carries, n = [], 4  # As many envs as other tests' policy batches.

  def policy(carry, obs):
    carry, act, outs = agent.policy(carry, obs)
    carries.append(jax.device_get(carry[0]))  # Posterior after this obs.
    return carry, act, outs

  def stamp(tran, worker):  # Which policy call and env each step is.
    tran['tick'] = np.int64((len(carries) - 1) * n + worker)
  driver = Driver([lambda i=i: dmain.make_env(config, i) for i in range(n)])
  driver.on_step(stamp)
  driver.on_step(replay.add)
  driver.reset(agent.init_policy)
  driver(policy, steps=n * 30)
  driver.close()
  data = replay.gather(replay.item_ids())
  assert len(data['tick']) > 20 and data['deter'].dtype == np.float16
  for ticks, deter, stoch in zip(data['tick'], data['deter'], data['stoch']):
    for t, d, z in zip(ticks, deter, stoch):
      state = carries[int(t) // n]
      worker = int(t) % n
      np.testing.assert_array_equal(
          d, state['deter'][worker].astype(np.float16))
      np.testing.assert_array_equal(z, state['stoch'][worker].argmax(-1))


def test_train_compiles_once(built, trained):
  agent = built[0]
  for i in range(2):
    agent.train(random_batch(agent, 10 + i))
  assert agent.compile_counts()['train'] == 1


def reference_kl(agent, data, seed):
  """Unclipped KL(posterior || prior) per step, in NumPy from the RSSM's
  posterior and prior logits (unimix mixed, summed over latents)."""
  model = agent.model

  def logits(data):
    _, entries = model._observe(data)
    return entries['logit'], model.dyn._prior(entries['deter'])
  if not hasattr(agent, '_test_logits'):  # Compiled once for both calls.
    agent._test_logits = jax.jit(
        lambda s, d, r: nj.pure(logits)(s, d, seed=r)[1])
  post, prior = agent._test_logits(agent.state, data, seed)

  def probs(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return (1 - model.dyn.unimix) * p + model.dyn.unimix / x.shape[-1]
  p, q = probs(post), probs(prior)
  return (p * (np.log(p) - np.log(q))).sum((-2, -1))


def test_uncertainty_signal_is_unclipped_kl(built):
  agent = built[0]
  # agent.uncertainty() on a batch with episodes: same seed, same samples.
  # uncertainty() draws from a stream of its own: restart it at a known
  # state and give the reference the seed it will draw.
  data = random_batch(agent, 41)
  seed = np.asarray(
      np.random.default_rng(5).integers(0, 2 ** 31, 2), np.uint32)
  direct = reference_kl(agent, data, seed)
  agent._rngs['uncertainty'] = [np.random.default_rng(5)]
  out = agent.uncertainty(data)
  np.testing.assert_allclose(out['dyn_kl'], direct, rtol=1e-4, atol=1e-5)
  assert out['rep_kl'].shape == direct.shape
  # The train step draws other posterior samples; where every step starts
  # an episode, the per-step KL does not depend on them.
  data = random_batch(agent, 40)
  data['is_first'][:] = True
  direct = reference_kl(agent, data, np.uint32([0, 0]))
  state = agent.save()
  outs, metrics = agent.train(data)
  agent.load(state)  # Leave the module's agent as it was.
  signal = outs['priority']['value']
  K = data['stepid'].shape[1] - signal.shape[1]
  assert signal.shape == (4, 8) and K == 1
  np.testing.assert_array_equal(outs['priority']['stepid'],
                                data['stepid'][:, K:])
  np.testing.assert_allclose(signal, direct, rtol=1e-4, atol=1e-5)
  # Unclipped: below the free nats somewhere, unlike loss/dyn.
  assert direct.min() < 1.0 and metrics['loss/dyn'] >= 1.0 - 1e-6
  np.testing.assert_allclose(metrics['dyn/kl_dyn_raw'], direct.mean(),
                             rtol=1e-4)


def test_imag_last_starts_from_the_last_posterior_states(built):
  """With agent.imag_last L, imagination and the replay value loss get the
  last L posterior states of each sequence, from the same forward pass, and
  the 'value' priority signal covers those L steps."""
  agent = built[0]
  model = agent.model
  L = 3
  names = ('_observe', '_imagination_loss', '_replay_value_loss')

  def probe(state, data, seed):
    seen = {}
    def spy(name, method):
      def call(*args):
        out = method(*args)
        seen[name] = (args, out[:2] if name == '_observe' else out[0])
        return out
      return call
    config, exts = model.config, model.exts
    try:
      model.config = config.update(imag_last=L)
      model.exts = [priority.PrioritySignal(
          'value', 0, model.config.batch_size, model.config.replay_context)]
      for name in names:
        setattr(model, name, spy(name, getattr(model, name)))
      _, (_, (outs_, _)) = nj.pure(model.loss)(state, data, seed=seed)
      seen['priority'] = outs_['priority']
    finally:
      model.config, model.exts = config, exts
      for name in names:
        delattr(model, name)
    return seen
  data = random_batch(agent, 3)
  seen = jax.jit(probe)(agent.state, data, agent._next_seed())
  obs, entries = seen['_observe'][1]
  T = obs['reward'].shape[1]
  assert T == 8 and L < T
  imag_obs, imag_entries = seen['_imagination_loss'][0][:2]
  for key in ('deter', 'stoch'):
    np.testing.assert_array_equal(imag_entries[key], entries[key][:, -L:])
  np.testing.assert_array_equal(imag_obs['is_terminal'],
                                obs['is_terminal'][:, -L:])
  # Imagined returns [B * L, H]; their first step bootstraps the replay
  # value loss of the same L steps.
  ret = seen['_imagination_loss'][1]
  rep_obs, rep_feat, boot = seen['_replay_value_loss'][0]
  assert ret.shape == (4 * L, model.config.imag_length)
  np.testing.assert_array_equal(boot, ret[:, 0].reshape(4, L))
  np.testing.assert_array_equal(rep_obs['reward'], obs['reward'][:, -L:])
  assert rep_feat.shape[:2] == (4, L)
  assert seen['priority']['value'].shape == (4, L)
  np.testing.assert_array_equal(seen['priority']['stepid'],
                                data['stepid'][:, -L:])


def test_priority_refresh_updates_every_item(built):
  from embodied.core import Prioritized, Replay
  from embodied.run.common import Learner
  agent = built[0]
  length = 9  # batch_length + replay_context of the debug block
  sampler = Prioritized(initial=1.0)
  replay = Replay(length, capacity=1000, chunksize=16, online=False,
                  sampler=sampler)
  rng = np.random.default_rng(0)
  for t in range(30):
    step = {k: np.zeros(s.shape, s.dtype) for k, s in agent.obs_space.items()}
    step['vector'] = rng.normal(size=step['vector'].shape).astype(np.float32)
    step['is_first'] = np.bool_(t == 0)
    step['action'] = np.int32(rng.integers(0, 6))
    replay.add(step)
  # The priority extension's refresh, as its host work runs it.
  from dreamerv3.priority import SIGNALS, PriorityRefresh
  learner = Learner(agent, replay, 4, context=1)
  refresh = PriorityRefresh(agent, replay, 4, 1, 1, learner._complete,
                            SIGNALS['uncertainty'])
  refresh(1)
  stats = refresh.stats()
  assert stats['replay/cache_items'] == 30 - length + 1 == 22
  assert stats['replay/cache_seconds'] > 0 and refresh.stats() == {}
  assert sampler.stats()['prio_never_updated'] == 0
  assert sampler.stats()['prio_mean'] != 1.0
  assert agent.compile_counts()['uncertainty'] == 1


def test_policy_compiles_once(built):
  # The carry from init_policy must have the sharding that policy returns,
  # else the second call misses the jit cache.
  agent = built[0]
  for mode in ('train', 'eval'):
    carry = agent.init_policy(4)
    for i in range(3):
      obs = random_obs(agent, 4, i, first=(i == 0))
      carry, _, _ = agent.policy(carry, obs, mode)
    assert agent.compile_counts()[f'policy_{mode}'] == 1


def test_policy_actions_in_space(built):
  agent = built[0]
  space = agent.act_space['action']
  for mode in ('train', 'eval'):
    carry = agent.init_policy(4)
    seen = set()
    for i in range(4):
      obs = random_obs(agent, 4, 20 + i, first=(i == 0))
      carry, act, outs = agent.policy(carry, obs, mode)
      assert set(act) == {'action'} and set(outs) == {'deter', 'stoch'}
      a = act['action']
      assert a.shape == (4,) and a.dtype == space.dtype
      assert ((a >= space.low) & (a < space.high)).all(), a
      seen |= set(a.tolist())
    assert len(seen) > 1  # Sampling, not a constant.
  # Repeated calls with the same inputs reuse the compiled functions.
  counts = agent.compile_counts()
  carry = agent.init_policy(4)
  carry, _, _ = agent.policy(carry, random_obs(agent, 4, 0, True))
  assert agent.compile_counts() == counts


def test_save_load_round_trip(built):
  agent = built[0]
  data = random_batch(agent, 30)
  obs = random_obs(agent, 4, 31, first=True)
  saved = agent.save()

  def outputs():
    agent.rng = np.random.default_rng(123)  # Same seeds for each call.
    carry = agent.init_policy(4)
    _, act, _ = agent.policy(carry, obs)
    _, metrics = agent.train(data)
    return act, metrics, agent.save()

  act1, metrics1, state1 = outputs()
  assert any(not np.array_equal(saved[k], state1[k]) for k in saved)
  agent.load(saved)
  restored = agent.save()
  for key in saved:
    assert restored[key].dtype == saved[key].dtype
    np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)
  act2, metrics2, state2 = outputs()
  np.testing.assert_array_equal(act1['action'], act2['action'])
  for key in metrics1:
    np.testing.assert_array_equal(metrics1[key], metrics2[key], err_msg=key)
  for key in state1:
    np.testing.assert_array_equal(state1[key], state2[key], err_msg=key)
  assert agent.compile_counts()['train'] == 1  # load() kept the shardings.


def other_model_state(built, argv):
  """State of a differently configured model: shapes from jax.eval_shape on
  its train step (traced, not compiled), zeros as values."""
  agent = built[0]
  _, aconfig = agent_config(argv)
  obs_space, act_space = agent.obs_space, agent.act_space
  model = Dreamer(obs_space, act_space, aconfig, name='agent')
  shapes = train_shapes(model, zeros_batch(model, batch=1, length=3))
  return {k: np.zeros(s.shape, s.dtype) for k, s in shapes.items()}


def test_load_mismatched_model_raises(built):
  agent = built[0]
  other = other_model_state(built, ['--agent.dyn.deter', '64'])
  assert other.keys() == agent.save().keys()
  with pytest.raises(ValueError, match=r'shape agent/dyn/\S+: checkpoint '):
    agent.load(other)
  # Missing and unexpected keys are named too.
  state = agent.save()
  key = sorted(state)[0]
  state['agent/extra/kernel'] = state.pop(key)
  with pytest.raises(ValueError) as info:
    agent.load(state)
  assert f'missing: {key}' in str(info.value)
  assert 'unexpected: agent/extra/kernel' in str(info.value)


def test_more_train_devices_than_exist_raises():
  # Indivisible batches: test_data_parallel_four_devices.
  config, aconfig = agent_config(['--jax.train_devices', '3'])
  obs_space, act_space = spaces(config)
  with pytest.raises(ValueError, match='jax.train_devices is 3'):
    ejax.Agent(Dreamer, obs_space, act_space, aconfig)


DATA_PARALLEL = textwrap.dedent('''
  import json, sys
  sys.path.insert(0, {root!r})
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from tests import test_agent as t
  from dreamerv3.agent import Dreamer
  from embodied import jax as ejax
  result = {{'devices': len(jax.devices())}}
  config, aconfig = t.agent_config(
      ['--jax.train_devices', '4', '--batch_size', '4'])
  obs_space, act_space = t.spaces(config)
  agent = ejax.Agent(Dreamer, obs_space, act_space, aconfig)
  result['mesh'] = int(agent.mesh.devices.size)
  finite, shards = True, []
  for i in range(2):
    batch = t.random_batch(agent, i)
    put = agent._put(batch)
    shards.append(sorted((s.device.id, s.data.shape[0])
                         for s in put['vector'].addressable_shards))
    _, metrics = agent.train(batch)
    finite &= all(bool(np.isfinite(v).all()) for v in metrics.values())
  result['finite'] = finite
  result['shards'] = shards
  result['spec'] = put['vector'].sharding.spec == P('batch')
  result['state_devices'] = len(next(iter(agent.state.values())).devices())
  carry = agent.init_policy(4)
  for i in range(2):
    carry, act, _ = agent.policy(carry, t.random_obs(agent, 4, i, i == 0))
  result['actions'] = act['action'].tolist()
  result['compiles'] = agent.compile_counts()
  try:
    ejax.Agent(Dreamer, obs_space, act_space,
               t.agent_config(['--batch_size', '6'])[1])
    result['indivisible'] = 'no error'
  except ValueError as e:
    result['indivisible'] = str(e)
  print('RESULT ' + json.dumps(result))
''')


@pytest.fixture(scope='module')
def data_parallel_proc():
  """A child process with 4 host devices running DATA_PARALLEL. It is
  waited for in its test and killed at module teardown at the latest."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=4').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.Popen(
      [sys.executable, '-c', DATA_PARALLEL.format(root=str(ROOT))],
      env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  yield proc
  if proc.poll() is None:
    proc.kill()
  proc.communicate()


def test_data_parallel_four_devices(data_parallel_proc):
  stdout, stderr = data_parallel_proc.communicate(timeout=500)
  lines = [l for l in stdout.splitlines() if l.startswith('RESULT ')]
  assert data_parallel_proc.returncode == 0 and lines, (
      stdout[-3000:] + stderr[-3000:])
  result = json.loads(lines[-1][len('RESULT '):])
  assert result['devices'] == 4 and result['mesh'] == 4
  assert result['finite'], result
  # Each of the 4 devices holds one of the 4 sequences of the batch.
  for shards in result['shards']:
    assert shards == [[d, 1] for d in range(4)], shards
  assert result['spec']  # Sharded along the batch axis of the mesh.
  assert result['state_devices'] == 4  # Parameters are replicated.
  assert result['compiles']['train'] == 1
  assert result['compiles']['policy_train'] == 1
  assert len(result['actions']) == 4
  assert all(0 <= a < 6 for a in result['actions'])
  assert 'divisible' in result['indivisible'], result['indivisible']


def _filled_replay(agent, steps=40):
  from embodied.core import Replay
  replay = Replay(9, capacity=1000, chunksize=16, online=False, seed=3)
  rng = np.random.default_rng(1)
  for t in range(steps):
    step = {k: np.zeros(s.shape, s.dtype) for k, s in agent.obs_space.items()}
    step['vector'] = rng.normal(size=step['vector'].shape).astype(np.float32)
    step['reward'] = np.float32(rng.normal())
    step['is_first'] = np.bool_(t % 13 == 0)
    step['action'] = np.int32(rng.integers(0, 6))
    replay.add(step)
  return replay


def test_prefetching_learner_trains_like_the_plain_one(built):
  # Prefetching samples batch i + 1 before step i's outputs reach replay
  # (a step staler context latents), so the write-back is recorded here
  # instead of applied: then both paths must train on the same batches to
  # the same parameters, and prefetch must write back every step, in order.
  from embodied.run.common import Learner
  agent = built[0]
  start = agent.save()
  results = []
  for prefetch in (False, True):
    agent.load(start)
    agent.rng = np.random.default_rng(7)
    replay = _filled_replay(agent)
    sampled, written = [], []
    sample = replay.sample
    replay.sample = lambda *a, **k: sampled.append(
        sample(*a, **k)) or sampled[-1]
    replay.update = lambda stepid, values: written.append(
        (np.asarray(stepid), values))
    learner = Learner(agent, replay, 4, context=1, prefetch=prefetch)
    metrics = [learner() for _ in range(4)]
    metrics.append(learner.flush())
    stats = learner.stats()
    assert 0 <= stats['learner/wait_frac'] <= 1
    # Dispatch is its own share with prefetching; the shares never
    # exceed the whole.
    assert ('learner/dispatch_frac' in stats) == prefetch
    assert stats['learner/wait_frac'] + stats.get(
        'learner/dispatch_frac', 0) <= 1 + 1e-9
    results.append((agent.save(), metrics, sampled, written))
  agent.load(start)
  (params0, metrics0, sampled0, written0), \
      (params1, metrics1, sampled1, written1) = results
  for key in params0:
    np.testing.assert_allclose(params1[key], params0[key], rtol=1e-5,
                               atol=1e-6, err_msg=key)
  # Prefetch samples one batch ahead (trained on after the next call).
  assert len(sampled0) == 4 and len(sampled1) == 5
  for a, b in zip(sampled0, sampled1):
    np.testing.assert_array_equal(a['stepid'], b['stepid'])
  # Metrics arrive one call late and none are lost.
  assert metrics1[0] == {} and metrics0[-1] == {}
  for m0, m1 in zip(metrics0[:4], metrics1[1:]):
    np.testing.assert_allclose(m1['loss/dyn'], m0['loss/dyn'], rtol=1e-5)
  assert len(written0) == len(written1) == 4
  for (s0, v0), (s1, v1), batch in zip(written0, written1, sampled0):
    np.testing.assert_array_equal(s0, s1)
    np.testing.assert_array_equal(s0, batch['stepid'][:, -s0.shape[1]:])
    for key in v0:
      np.testing.assert_allclose(np.asarray(v1[key], np.float32),
                                 np.asarray(v0[key], np.float32), atol=1e-2)


def test_every_loss_term_has_a_scale_and_every_scale_a_term():
  from dreamerv3.agent import _check_scales
  _check_scales({'rec': 1, 'rew': 2}, {'rec': 1.0, 'rew': 1.0})
  with pytest.raises(KeyError, match=r"no scale for the loss term 'ens'"):
    _check_scales({'rec': 1, 'ens': 2}, {'rec': 1.0})
  with pytest.raises(KeyError, match=r'agent.loss_scales.con scales no loss'):
    _check_scales({'rec': 1}, {'rec': 1.0, 'con': 1.0})
