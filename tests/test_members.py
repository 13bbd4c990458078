"""Several seeds as one program (run.seeds): N vmapped agents equal N
one-seed agents, stay independent, resume together, and write the logdirs
scripts/scores.py reads."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dreamerv3 import main as dmain
from dreamerv3.agent import Dreamer
from embodied import jax as ejax
from tests import tiny_agent
from tests.helpers import config_and_spaces, random_batch

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = [11, 22]


def test_members_step_equals_one_seed_steps():
  """One train step of 2 vmapped agents against 2 one-seed steps from the
  same states, batches and seeds, with the priority signal extension on
  (the resume test below runs latent reward disagreement per seed). Parameters and statistics agree to float rounding
  (1e-6; measured 1.5e-8). LaProp's moments may differ more where a
  gradient is ~0: g / sqrt(nu) turns its rounding into an order-one
  difference of the first step's momentum, so those are compared on all
  but 0.1% of their elements."""
  outs, one_outs = members_against_one_seed([
      '--configs', 'debug', '--task', 'dummy_vector', '--replay.priosignal',
      'uncertainty'])
  for k in range(len(SEEDS)):
    np.testing.assert_allclose(
        one_outs[k]['priority']['value'], outs['priority']['value'][k],
        rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # 60 s; tests/test_nets.py checks the batching rule itself.
def test_image_members_step_equals_one_seed_steps():
  """The same with image observations: the encoder's and decoder's
  convolutions have a kernel per member (nets.per_member batches them by
  looping over the members on the CPU)."""
  members_against_one_seed([
      '--configs', 'debug', '--task', 'dummy_image', '--env.size', '16,16',
      '--agent.enc.mults', '2,2', '--agent.dec.mults', '2,2'])


def members_against_one_seed(argv):
  """Checks one step of SEEDS as members against one-seed steps; returns
  the members' outputs and the one-seed steps' outputs."""
  config, obs, act = config_and_spaces(argv)
  aconfig = dmain.agent_config(config)
  multi = ejax.Agent(Dreamer, obs, act, aconfig, members=SEEDS)
  single = ejax.Agent(Dreamer, obs, act, aconfig, seed=SEEDS[0])
  batches = [random_batch(single, i) for i in range(2)]
  init = multi.save()
  outs, metrics = multi.train(
      {k: np.stack([b[k] for b in batches]) for k in batches[0]})
  after = multi.save()
  assert multi.compile_counts()['train'] == 1
  one_outs = []
  for k, seed in enumerate(SEEDS):
    single.load({n: v[k] for n, v in init.items()})
    single.rng = np.random.default_rng(seed)
    out, one_metrics = single.train(batches[k])
    one_outs.append(out)
    got = single.save()
    for name, value in got.items():
      diff = np.abs(value.astype(np.float64) - after[name][k])
      if '/opt/' in name and ('/mom/' in name or '/nu/' in name):
        assert np.mean(diff > 1e-6) < 1e-3, name
      else:
        assert diff.max() < 1e-6, (name, diff.max())
    np.testing.assert_allclose(
        one_metrics['opt/loss'], metrics['opt/loss'][k], rtol=1e-5)
  return outs, one_outs


def tiny(members):
  model, obs, act = tiny_agent.make_model()
  return ejax.Agent(model, obs, act, tiny_agent.make_config(),
                    members=members)


def test_members_start_as_their_one_seed_agents():
  # Each member's initial state (parameters, slow critic copy, optimizer
  # and normaliser state) is that of a one-seed agent with its seed.
  model, obs, act = tiny_agent.make_model()
  config = tiny_agent.make_config()
  multi = ejax.Agent(model, obs, act, config, members=[11, 22]).save()
  for k, seed in enumerate((11, 22)):
    one = ejax.Agent(model, obs, act, config, seed=seed).save()
    assert one.keys() == multi.keys()
    for name, value in one.items():
      np.testing.assert_array_equal(value, multi[name][k], err_msg=name)


def test_members_are_independent():
  agent = tiny([11, 22, 33])
  init = agent.save()
  # Different seeds, different parameters from the start.
  kernel = init['agent/enc/kernel']
  assert not np.allclose(kernel[0], kernel[1])
  data = [tiny_agent.batch(i) for i in range(3)]
  stack = lambda ds: {k: np.stack([d[k] for d in ds]) for k in ds[0]}
  agent.train(stack(data))
  base = agent.save()
  # The same start, member 1's batch changed: only member 1 moves apart.
  agent.load(init)
  agent.rngs = [np.random.default_rng(s) for s in (11, 22, 33)]
  changed = list(data)
  changed[1] = dict(changed[1], reward=changed[1]['reward'] + 1.0)
  agent.train(stack(changed))
  other = agent.save()
  for name in base:
    np.testing.assert_array_equal(base[name][0], other[name][0])
    np.testing.assert_array_equal(base[name][2], other[name][2])
  assert not np.allclose(base['agent/head/bias'][1],
                         other['agent/head/bias'][1])
  # A one-seed checkpoint starts every member alike.
  agent.load({k: v[0] for k, v in init.items()})
  for name, value in agent.save().items():
    np.testing.assert_array_equal(value[2], init[name][0])


def run(logdir, cache, *args):
  proc = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug', '--task',
       'dummy_vector', '--logdir', str(logdir), '--run.seeds', '5,7',
       '--logger.outputs', 'jsonl', '--jax.cache_dir', str(cache),
       '--agent.use_intrinsic', 'True', '--agent.intrinsic.ensemble_size',
       '2', *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def rows(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_seeds_resume_together_and_score(tmp_path, jax_cache):
  logdir = tmp_path / 'run'
  run(logdir, jax_cache, '--run.steps', '160')
  first = {s: rows(logdir / f'seed{s}' / 'scores.jsonl') for s in (5, 7)}
  run(logdir, jax_cache, '--run.steps', '320')
  for seed in (5, 7):
    member = logdir / f'seed{seed}'
    config = (member / 'config.yaml').read_text()
    assert f'seed: {seed}' in config
    scores = rows(member / 'scores.jsonl')
    steps = [r['step'] for r in scores]
    # Continues from its own step: the first run's rows, then later ones.
    assert scores[:len(first[seed])] == first[seed]
    assert steps == sorted(steps) and steps[-1] > 160
    # Replay not duplicated: it holds each env step of the seed once, the
    # first run's included (replay/size equals the step at every log).
    sizes = [(r['step'], r['replay/size'])
             for r in rows(member / 'metrics.jsonl') if 'replay/size' in r]
    assert sizes[-1][0] > 160 and all(step == size for step, size in sizes)
  # The two seeds learned differently; each kept its own schedule state
  # (latent reward disagreement's env step count) across the resume.
  assert first[5] != first[7]
  for seed in (5, 7):
    steps = [r['train/intrinsic/env_steps'] for r in rows(
        logdir / f'seed{seed}' / 'metrics.jsonl')
        if 'train/intrinsic/env_steps' in r]
    assert steps == sorted(steps) and steps[-1] > 160
  proc = subprocess.run(
      [sys.executable, 'scripts/scores.py', str(logdir), '--json'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert '"runs": 2' in proc.stdout.replace(' ', '').replace(
      '"runs":2', '"runs": 2')


@pytest.mark.parametrize('value,message', [
    ('0', 'at least 1'), ('3,3', 'twice'), ('x', 'a count')])
def test_bad_seeds(tmp_path, value, message):
  proc = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug', '--logdir',
       str(tmp_path / 'run'), '--run.seeds', value], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and message in proc.stderr
  assert not (tmp_path / 'run').exists()


MEMBERS_SCRIPT = '''
import sys
import numpy as np
sys.path.insert(0, {root!r})
from embodied import jax as ejax
from tests import tiny_agent
ejax.setup('cpu', 'float32')
import jax
model, obs, act = tiny_agent.make_model()
agent = ejax.Agent(model, obs, act, tiny_agent.make_config(),
                   members=[1, 2, 3, 4])
stack = lambda ds: {{k: np.stack([d[k] for d in ds]) for k in ds[0]}}
for step in range(2):
  agent.train(stack([tiny_agent.batch(step + i) for i in range(4)]))
shards = {{len(v.sharding.device_set) for v in agent.state.values()}}
np.savez({out!r}, devices=len(jax.devices()), shards=max(shards),
         **{{k.replace('/', '|'): v for k, v in agent.save().items()}})
'''


def test_members_split_over_mock_devices(tmp_path):
  """With several devices the member axis is split over them (members are
  independent: no communication); 4 members on 2 mock CPU devices equal 4
  members on one device."""
  out = {}
  for devices in (1, 2):
    path = tmp_path / f'{devices}.npz'
    env = dict(os.environ, XLA_FLAGS=(
        f'--xla_force_host_platform_device_count={devices}'))
    script = MEMBERS_SCRIPT.format(root=str(ROOT), out=str(path))
    proc = subprocess.run([sys.executable, '-c', script], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out[devices] = dict(np.load(path))
  assert out[2]['devices'] == 2 and out[2]['shards'] == 2
  assert out[1]['shards'] == 1
  for key, value in out[1].items():
    if key not in ('devices', 'shards'):
      np.testing.assert_allclose(out[2][key], value, rtol=1e-5, atol=1e-6)
