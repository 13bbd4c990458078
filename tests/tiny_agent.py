"""A tiny ninjax model behind the jitted Agent wrapper, for device and host
tests that need seconds, not the Dreamer agent's half minute of compiling.

It has what matters for sharding: parameters trained by the project's
optimizer, a statistic written in place (like a normaliser), a loss that
draws from the step's seed, host inputs that differ per process, per-sequence
outputs ([B, T] priorities) and a recurrent policy. Run as a script it is one process of a test:
  python tests/tiny_agent.py OUT.npz [--processes N --process I --port P]
        [--train_devices N] [--policy_devices N] [--steps N]
trains on its rows of a fixed global batch (process I of N holds rows
I*B/N..(I+1)*B/N), acts a few times in between, and saves the state.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH, LENGTH, ACTIONS = 8, 5, 3


def make_model():
  import elements
  import jax
  import jax.numpy as jnp
  import ninjax as nj
  from embodied.jax import nets
  from embodied.jax.opt import Optimizer
  f32 = jnp.float32

  class Host:
    """Host state that differs per process (like recent returns): the
    replicas must all train with process 0's values."""

    def inputs(self):
      return {'sched': {'scale': 1.0 + jax.process_index()}}

  class Tiny(nj.Module):

    def __init__(self, obs_space, act_space, config):
      self.enc = nets.Linear(units=8, name='enc')
      self.head = nets.Linear(units=1, name='head')
      self.pol = nets.Linear(units=ACTIONS, name='pol')
      self.opt = Optimizer([self.enc, self.head, self.pol], lr=1e-2, warmup=0,
                           name='opt')
      self.host = Host()

    def init_policy(self, batch_size):
      return jnp.zeros((batch_size, 8), f32)

    def policy(self, carry, obs, mode='train'):
      carry = jnp.tanh(self.enc(obs['vector'])) + 0.5 * carry
      logits = self.pol(carry)
      if mode == 'train':
        act = jax.random.categorical(nj.seed(), logits)
      else:
        act = logits.argmax(-1)
      return carry, {'action': act.astype(jnp.int32)}, {'h': carry}

    def train(self, data, inputs=None):
      metrics, err = self.opt(self.loss, data, inputs['sched']['scale'])
      mean = self.value('mean', jnp.zeros, (), f32)
      self.write('mean', 0.9 * mean + 0.1 * data['reward'].mean())
      return {'priority': err}, metrics

    def loss(self, data, scale):
      feat = jnp.tanh(self.enc(data['vector']))
      pred = self.head(feat)[..., 0]
      # Seeded noise: the replicas must draw the same numbers.
      noise = 0.1 * jax.random.normal(nj.seed(), pred.shape)
      err = (pred - data['reward'] - noise) ** 2
      logp = jax.nn.log_softmax(self.pol(feat))
      taken = jnp.take_along_axis(logp, data['action'][..., None], -1)
      return scale * err.mean() - 0.1 * taken.mean(), err

    def report(self, data, inputs=None):
      pred = self.head(jnp.tanh(self.enc(data['vector'])))[..., 0]
      return {'mse': ((pred - data['reward']) ** 2).mean()}

  obs_space = {
      'vector': elements.Space(jnp.float32, (4,)),
      'reward': elements.Space(jnp.float32),
      'is_first': elements.Space(bool), 'is_last': elements.Space(bool),
      'is_terminal': elements.Space(bool)}
  act_space = {'action': elements.Space(jnp.int32, (), 0, ACTIONS)}
  return Tiny, obs_space, act_space


def make_config(train_devices=0, policy_devices=0):
  import elements
  return elements.Config(
      batch_size=BATCH, batch_length=LENGTH, replay_context=0,
      jax=dict(train_devices=train_devices, policy_devices=policy_devices,
               jit=True))


def batch(step):
  """The fixed global batch of a train step (same on every process)."""
  import numpy as np
  rng = np.random.default_rng(step)
  return {
      'vector': rng.normal(0, 1, (BATCH, LENGTH, 4)).astype(np.float32),
      'reward': rng.normal(0, 1, (BATCH, LENGTH)).astype(np.float32),
      'action': rng.integers(0, ACTIONS, (BATCH, LENGTH)).astype(np.int32),
      'is_first': np.zeros((BATCH, LENGTH), bool),
      'is_last': np.zeros((BATCH, LENGTH), bool),
      'is_terminal': np.zeros((BATCH, LENGTH), bool),
      'stepid': np.zeros((BATCH, LENGTH), np.int64)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('out')
  parser.add_argument('--processes', type=int, default=1)
  parser.add_argument('--process', type=int, default=0)
  parser.add_argument('--port', type=int, default=0)
  parser.add_argument('--train_devices', type=int, default=0)
  parser.add_argument('--policy_devices', type=int, default=0)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--act', type=int, default=1,
                      help='policy calls before each train step; they '
                      'differ per process and must not change training')
  args = parser.parse_args()
  import numpy as np
  from embodied import jax as ejax
  from embodied.jax import hosts
  settings = None
  if args.processes > 1:
    settings = hosts.Settings(
        f'127.0.0.1:{args.port}', args.processes, args.process, 'config')
  ejax.setup('cpu', 'float32', distributed=settings)
  model, obs_space, act_space = make_model()
  agent = ejax.Agent(model, obs_space, act_space,
                     make_config(args.train_devices, args.policy_devices))
  copies = []  # Parameter copies to the policy devices.
  local_copy = agent._local_copy
  agent._local_copy = lambda *a: copies.append(1) or local_copy(*a)
  rows = BATCH // args.processes
  mine = slice(args.process * rows, (args.process + 1) * rows)
  envs = 2
  carry = agent.init_policy(envs)
  obs = {k: np.zeros((envs, *s.shape), s.dtype) for k, s in obs_space.items()}
  acts, prios = [], []
  for step in range(args.steps):
    for i in range(args.act * (args.process + 1)):
      obs['vector'] = np.full((envs, 4), i / 3, np.float32)
      carry, act, _ = agent.policy(carry, obs)
      acts.append(act['action'])
    outs, metrics = agent.train({k: v[mine] for k, v in batch(step).items()})
    prios.append(outs['priority'])
  policy_copies = len(copies)
  carry_devices = sorted(d.id for d in carry.devices())
  report = agent.report({k: v[mine] for k, v in batch(99).items()})
  np.savez(args.out, **{f'state/{k}': v for k, v in agent.save().items()},
           priority=np.stack(prios), actions=np.array(acts),
           loss=np.float32(metrics['opt/loss']), mse=report['mse'],
           compiles=np.array(sorted(agent.compile_counts().items()),
                             dtype=object).astype(str),
           policy_copies=np.int64(policy_copies),
           carry_devices=np.array(carry_devices))
  print('DONE', flush=True)


if __name__ == '__main__':
  main()
