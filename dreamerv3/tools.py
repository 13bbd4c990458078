"""Read-only access to a run's logdir for the play and dream tools: its
config, the agent from the latest checkpoint, replay sequences, and jitted
helpers (value of a policy state, open-loop dreams). Nothing here writes into
the logdir: replay chunk files are read directly instead of through Replay,
which would create and tidy its directory.
"""

import os
import pathlib

import elements
import numpy as np


class NoCheckpoint(Exception):
  """The logdir has no config or no complete checkpoint."""


class Run:
  """A loaded run: config, env factory, agent with the checkpoint's
  parameters, and (with replay=True) the replay checkpoint's slot table."""

  def __init__(self, logdir, replay=False):
    from dreamerv3 import main as dmain
    from embodied import jax as ejax
    from embodied.core import Checkpoint
    self.logdir = pathlib.Path(os.path.expanduser(str(logdir))).resolve()
    if not (self.logdir / 'config.yaml').exists():
      raise NoCheckpoint(
          f'{self.logdir} is not a run logdir (no config.yaml)')
    checkpoint = Checkpoint(elements.Path(self.logdir) / 'ckpt')
    self.folder = checkpoint.latest()
    if self.folder is None:
      raise NoCheckpoint(
          f'{self.logdir} holds no complete checkpoint (ckpt/): let the run '
          'save one first (run.save_every) or pass another logdir')
    self.config = load_config(self.logdir)
    env = dmain.make_env(self.config, 0)
    self.obs_space, self.act_space = env.obs_space, env.act_space
    env.close()
    ejax.setup(self.config.jax.platform, self.config.jax.compute_dtype)
    self.agent = dmain.make_agent(self.config, self.obs_space, self.act_space)
    checkpoint.register('agent', self.agent)
    keys = ['agent']
    self.replay = _Holder()
    if replay:
      checkpoint.register('replay', self.replay)
      keys.append('replay')
    checkpoint.load(self.folder, keys=keys)
    self.images = sorted(
        k for k, s in self.agent.obs_space.items() if len(s.shape) == 3)

  def make_env(self, index=0):
    from dreamerv3 import main as dmain
    return dmain.make_env(self.config, index)

  def value_fn(self):
    """jitted (carry) -> [B] critic value of the policy's latest state."""
    import jax
    import ninjax as nj
    model = self.agent.model

    def value(state, carry):
      fn = lambda c: model.val(model.dyn.feat(c[0])).pred()
      return nj.pure(fn)(state, carry, seed=np.uint32([0, 0]))[1]
    jitted = jax.jit(value)
    return lambda carry: np.asarray(jitted(self.agent.state, carry))

  def dream_fn(self, ctx, length, policy):
    """jitted (data [1, K + ctx (+ length)], seed) -> Dreamer.dream()."""
    import jax
    import ninjax as nj
    model = self.agent.model

    def dream(state, data, seed):
      fn = lambda d: model.dream(d, ctx, length, policy)
      return nj.pure(fn)(state, data, seed=seed)[1]
    jitted = jax.jit(dream)
    return lambda data, seed: jax.tree.map(
        np.asarray, jitted(self.agent.state, data, np.uint32([seed, 0])))

  def sequences(self, length, rng):
    """Windows of `length` consecutive steps from the replay checkpoint
    ({key: [length, ...]}), in random order; windows that start an episode
    and do not cross into the next one come first."""
    data = self.replay.data
    if not data or not data.get('slots'):
      return
    windows = []
    for slot, info in data['slots'].items():
      if info['fill'] >= length:
        windows += [(slot, start) for start in range(info['fill'] - length + 1)]
    if not windows:
      return
    order = rng.permutation(len(windows))
    cache, good, rest = {}, [], []
    for index in order[:2000]:
      slot, start = windows[index]
      if slot not in cache:
        cache[slot] = self._chunk(data['slots'][slot])
      seq = {k: v[start:start + length] for k, v in cache[slot].items()}
      clean = seq['is_first'][0] and not seq['is_first'][1:].any()
      (good if clean else rest).append(seq)
    yield from good + rest

  def _chunk(self, info):
    if not info.get('name'):
      return {k: v[:info['fill']] for k, v in info['data'].items()}
    with open(self.logdir / 'replay' / info['name'], 'rb') as f:
      with np.load(f) as npz:
        return {k: npz[k][:info['fill']] for k in npz.files}


class _Holder:
  """Checkpoint object that keeps the loaded data as it is."""

  data = None

  def save(self):
    return self.data

  def load(self, data):
    self.data = data


def load_config(logdir):
  """The run's config.yaml over today's defaults (older key names under
  today's; keys added since the run was written keep their defaults; keys
  since removed are dropped)."""
  from dreamerv3 import config as config_module, main as dmain
  config = dmain.parse([])
  saved = config_module.load_logdir_config(logdir, config)
  if saved is None:
    raise FileNotFoundError(f'{logdir} has no config.yaml')
  known = {k: v for k, v in saved.items() if k in config.flat}
  config = config.update(known)
  # The tools run on whatever this machine has: one device, any platform.
  return config.update({
      'logdir': str(logdir), 'jax.train_devices': 1,
      'jax.platform': 'auto'})


def batch(seq):
  """{key: [T, ...]} -> {key: [1, T, ...]} with a stepid."""
  data = {k: np.asarray(v)[None] for k, v in seq.items()}
  if 'stepid' not in data:
    data['stepid'] = np.zeros(data['is_first'].shape, np.int64)
  return data


def ascii_frame(image):
  """A multi-channel (or grayscale) image [H, W, C] as text: '.' for empty
  cells, else the letter of the highest active channel (a, b, c, ...)."""
  image = np.asarray(image)
  active = image > 127
  lines = []
  for row in active:
    chars = []
    for cell in row:
      idx = np.flatnonzero(cell)
      chars.append(chr(ord('a') + int(idx[-1]) % 26) if len(idx) else '.')
    lines.append(' '.join(chars))
  return '\n'.join(lines)
