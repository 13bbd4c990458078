"""The extension interface: a new extension is one module. A toy module
written to a temporary file plugs in with --extensions, declares its own
config namespace, defaults, aliases and checks, adds a trainable module, a
loss term and a host side in the train loop, and trains, without any other
file edited."""

import json
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent

TOY = '''
"""A linear probe that predicts the reward from the model state."""

import jax
import jax.numpy as jnp
import ninjax as nj

from dreamerv3.extensions import Extension, HostWork
from embodied.jax import nets

CONFIG = ('toy',)
DEFAULTS = """
# A linear reward probe on the model state.
toy:
  enabled: True     # install the probe
  scale: 0.5        # scale of its loss term
  units: 4          # width of its hidden layer
"""
# An older name of the namespace: --probe.units sets toy.units.
ALIASES = {'probe': 'toy'}
RANGES = ((r'toy\\.units', 'int', 1, None),)
STRUCTURAL = ((r'toy\\.units', None),)


class Probe(nj.Module, Extension):

  name = 'toy'

  def __init__(self, units, scale):
    self.units = units
    self.loss_scales = {'toy': scale}
    self.modules = [self]

  def losses(self, obs, entries, feat, prevact, inputs):
    x = jax.lax.stop_gradient(feat)
    x = jax.nn.silu(self.sub('hidden', nets.Linear, units=self.units)(x))
    pred = self.sub('out', nets.Linear, units=1)(x)[..., 0]
    loss = (pred.astype(jnp.float32) - obs['reward']) ** 2
    return {'toy': loss}, {'toy/probe_error': loss.mean()}

  def step_outputs(self, signals):
    return signals['dyn_kl']  # Any per-step value, for the host side.

  def host_work(self, agent, replay, prepare):
    return Counter(replay)


class Counter(HostWork):
  """The host side: counts the step outputs it gets and checks their
  step ids against replay."""

  def __init__(self, replay):
    self.replay, self.steps, self.updates = replay, 0, 0

  def outputs(self, outs):
    stepid = outs['toy']['stepid']
    assert stepid.shape == outs['toy']['value'].shape
    assert stepid.max() < len(self.replay) + 1024  # Ids of stored steps.
    self.steps += stepid.size

  def updated(self, updates):
    self.updates = updates

  def stats(self):
    return {'toy/host_steps': self.steps, 'toy/host_updates': self.updates}


def install(agent, config):
  if not config.toy.enabled:
    return None
  return Probe(config.toy.units, config.toy.scale, name='toy')
'''


def run(tmp_path, *args):
  return subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug', '--task',
       'dummy_vector', '--run.log_every', '1', '--jax.cache_dir',
       str(tmp_path / 'jax_cache'),
       '--logger.outputs', 'jsonl', *args], cwd=ROOT, capture_output=True,
      text=True, timeout=600)


def test_toy_extension_from_a_file_trains(tmp_path):
  path = tmp_path / 'toy.py'
  path.write_text(textwrap.dedent(TOY))
  logdir = tmp_path / 'run'
  proc = run(tmp_path, '--extensions', str(path), '--toy.units', '8',
             '--logdir', str(logdir), '--run.steps', '400')
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = (logdir / 'config.yaml').read_text()
  assert 'toy.py' in config and 'units: 8' in config
  rows = [json.loads(line) for line in
          (logdir / 'metrics.jsonl').read_text().splitlines()]
  errors = [r['train/toy/probe_error'] for r in rows
            if 'train/toy/probe_error' in r]
  losses = [r['train/loss/toy'] for r in rows if 'train/loss/toy' in r]
  assert errors and losses and np.all(np.isfinite(errors + losses))
  # Its host side saw every update's outputs: debug trains on 4 x 8 steps.
  host = [r for r in rows if 'toy/host_updates' in r][-1]
  assert host['toy/host_updates'] > 0
  assert host['toy/host_steps'] in (
      4 * 8 * host['toy/host_updates'], 4 * 8 * (host['toy/host_updates'] - 1))
  # The probe's parameters are the agent's: in the checkpoint, trained by
  # the agent's optimizer (its second-moment estimate has seen gradients).
  ckpt = sorted((logdir / 'ckpt').glob('2*'))[-1]
  state = pickle.loads((ckpt / 'agent.pkl').read_bytes())
  assert state['agent/toy/hidden/kernel'].shape[-1] == 8
  for name in ('hidden/kernel', 'out/kernel'):
    nu = state[f'agent/opt/1/nu/agent/toy/{name}']
    assert np.all(np.isfinite(nu)) and nu.max() > 0, name
  # A bad value of the extension's own key: exit 2 before the logdir.
  bad = tmp_path / 'bad'
  proc = run(tmp_path, '--extensions', str(path), '--toy.units', '0',
             '--logdir', str(bad))
  assert proc.returncode == 2 and 'toy.units' in proc.stderr
  assert not bad.exists()


def test_unknown_extension_module_is_a_config_error(tmp_path):
  proc = run(tmp_path, '--extensions', str(tmp_path / 'missing.py'),
             '--logdir', str(tmp_path / 'run'))
  assert proc.returncode == 2 and 'missing.py' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
