"""Host-side wrapper that turns a ninjax model into a jitted, sharded agent.

The model is a ninjax module with methods
  init_policy(batch_size) -> carry
  policy(carry, obs, mode) -> (carry, act, outs)
  train(data, inputs) -> (outs, metrics)
  report(data, inputs) -> metrics
  uncertainty(data) -> [B, T] per-step values (optional; no state change)
  after_init() (optional): adjusts the freshly created state once
and optionally an attribute `host`: per-run host state whose inputs()
({name: {key: array}}, fixed shapes) enter train() and report() as
replicated input arrays on every call, so new values never recompile.
The wrapper owns the state (parameters, optimizer and normaliser state),
compiles each method once, shards the batch over `train_devices` and keeps
everything else replicated.
"""

import time

import jax
import ninjax as nj
import numpy as np

from . import nets


class PlatformError(RuntimeError):
  pass


def setup(platform='auto', compute_dtype='auto', debug_nans=False,
          xla_flags='', cache_dir=''):
  """Choose the JAX platform and compute dtype once per process. With a
  cache_dir, compiled programs are cached on disk so a restarted or resumed
  run with the same shapes skips compilation."""
  if xla_flags:
    import os
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' +
                               xla_flags).strip()
  if platform != 'auto':
    try:
      jax.config.update('jax_platforms', platform)
      devices = jax.devices(platform)
    except Exception as e:  # RuntimeError, or AssertionError for cuda.
      raise PlatformError(
          f"jax.platform '{platform}' was requested but JAX has no such "
          f"backend here ({e.__class__.__name__}: {(str(e).splitlines() or [''])[0]}). "
          "Install the matching jax extra (e.g. 'pip install jax[cuda12]') "
          "or use --jax.platform auto.") from None
  else:
    devices = jax.devices()
  platform = devices[0].platform
  if compute_dtype == 'auto':
    compute_dtype = 'bfloat16' if platform in ('gpu', 'cuda', 'tpu') else \
        'float32'
  nets.set_compute_dtype(compute_dtype)
  jax.config.update('jax_debug_nans', bool(debug_nans))
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  print(f'JAX platform: {platform} ({len(devices)} device(s): '
        f'{devices[0].device_kind}), compute dtype {compute_dtype}')
  return platform, compute_dtype


def _to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


class Agent:

  def __init__(self, model_fn, obs_space, act_space, config, seed=0):
    """model_fn(obs_space, act_space, config, name=...) -> ninjax module.
    config needs batch_size, batch_length, replay_context and a `jax`
    sub-config with train_devices (int, 0 = all) and jit (bool)."""
    self.obs_space = {
        k: v for k, v in obs_space.items() if not k.startswith('log/')}
    self.act_space = {k: v for k, v in act_space.items() if k != 'reset'}
    self.config = config
    self.model = model_fn(self.obs_space, self.act_space, config, name='agent')
    # Extra per-step keys the model keeps in replay (e.g. latents).
    self.ext_space = self.model.ext_space() if hasattr(
        self.model, 'ext_space') else {}
    # Host state of the model (schedules fed by the run loop), or None.
    self.host = getattr(self.model, 'host', None)
    self.rng = np.random.default_rng(seed)
    self.seed = seed

    devices = jax.devices()
    ndev = config.jax.train_devices or len(devices)
    if config.batch_size % ndev:
      raise ValueError(
          f'batch_size {config.batch_size} is not divisible by the '
          f'{ndev} train devices (jax.train_devices).')
    self.mesh = jax.sharding.Mesh(np.array(devices[:ndev]), ('batch',))
    self.replicated = jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec())
    self.batched = jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec('batch'))
    self._compile_time = {}
    self._init_state()
    self._build()

  # Public API.

  def init_policy(self, batch_size):
    return self._init_policy(self.state, batch_size)

  def policy(self, carry, obs, mode='train'):
    obs = {k: obs[k] for k in self.obs_space}
    carry, act, outs = self._call(
        f'policy_{mode}', self._policy[mode], self.state, carry, obs,
        self._next_seed())
    return carry, _to_host(act), _to_host(outs)

  def train(self, data):
    outs, metrics = self.train_async(data)
    return _to_host(outs), _to_host(metrics)

  def train_async(self, data):
    """Dispatches one train step and returns its (outs, metrics) as device
    arrays without waiting for the step: the host can prepare the next
    batch while the device computes. `data` may already be on the devices
    (put())."""
    data = self.put(data)
    self.state, (outs, metrics) = self._call(
        'train', self._train, self.state, data, self._inputs(),
        self._next_seed())
    return outs, metrics

  def put(self, data):
    """Starts the transfer of a batch to the train devices (sharded over
    them) and returns it; arrays already there pass through."""
    return self._put(data)

  @staticmethod
  def fetch(tree):
    """Device arrays -> NumPy, waiting for the computation behind them."""
    return _to_host(tree)

  def report(self, data):
    data = self._put(data)
    metrics = self._call(
        'report', self._report, self.state, data, self._inputs(),
        self._next_seed())
    return _to_host(metrics)

  def uncertainty(self, data):
    """The model's per-step uncertainty of a batch shaped like a train
    batch, e.g. to refresh replay priorities; leaves the state unchanged."""
    if self._uncertainty is None:
      raise NotImplementedError(
          f'{type(self.model).__name__} has no uncertainty() method.')
    data = self._put(data)
    out = self._call('uncertainty', self._uncertainty, self.state, data,
                     self._next_seed())
    return _to_host(out)

  def save(self):
    return {k: np.asarray(v) for k, v in jax.device_get(self.state).items()}

  def load(self, data):
    have = {k: (v.shape, v.dtype) for k, v in self.state.items()}
    got = {k: (np.shape(v), np.asarray(v).dtype) for k, v in data.items()}
    missing, extra = set(have) - set(got), set(got) - set(have)
    wrong = [k for k in set(have) & set(got) if have[k][0] != got[k][0]]
    if missing or extra or wrong:
      lines = []
      lines += [f'  missing: {k}' for k in sorted(missing)[:5]]
      lines += [f'  unexpected: {k}' for k in sorted(extra)[:5]]
      lines += [f'  shape {k}: checkpoint {got[k][0]} vs model {have[k][0]}'
                for k in sorted(wrong)[:5]]
      raise ValueError(
          'Checkpoint does not match the model built from this config '
          '(was it written with other model sizes or spaces?):\n' +
          '\n'.join(lines))
    state = {k: np.asarray(data[k]).astype(have[k][1]) for k in have}
    self.state = jax.device_put(state, self.replicated)

  def param_counts(self):
    """Parameter count per top-level network (optimizer state excluded)."""
    counts = {}
    for key, value in self.state.items():
      parts = key.split('/')
      if len(parts) < 3 or 'opt' in parts[1]:
        continue
      counts[parts[1]] = counts.get(parts[1], 0) + int(np.prod(value.shape))
    return counts

  def compile_counts(self):
    """How many times each jitted function has been compiled."""
    fns = {'train': self._train, 'report': self._report,
           **{f'policy_{k}': v for k, v in self._policy.items()}}
    if self._uncertainty is not None:
      fns['uncertainty'] = self._uncertainty
    return {k: v._cache_size() for k, v in fns.items()}

  @property
  def compile_time(self):
    return dict(self._compile_time)

  # Internals.

  def _inputs(self):
    """The host's current inputs as float32 NumPy arrays ({} without)."""
    if self.host is None:
      return {}
    return {k: {n: np.asarray(v, np.float32) for n, v in d.items()}
            for k, d in self.host.inputs().items()}

  def _next_seed(self):
    return np.asarray(self.rng.integers(0, 2 ** 31, 2), np.uint32)

  def _put(self, data):
    data = {k: v for k, v in data.items() if not k.startswith('log/')}
    return jax.device_put(data, self.batched)

  def _call(self, name, fn, *args):
    if name not in self._compile_time:
      start = time.time()
      out = fn(*args)
      jax.block_until_ready(out)
      self._compile_time[name] = time.time() - start
      return out
    return fn(*args)

  def _dummy_batch(self, batch_size=None, length=None):
    c = self.config
    batch_size = batch_size or c.batch_size
    length = length or c.batch_length + c.replay_context
    spaces = {**self.obs_space, **self.act_space, **self.ext_space}
    data = {k: np.zeros((batch_size, length, *s.shape), s.dtype)
            for k, s in spaces.items()}
    data['stepid'] = np.zeros((batch_size, length), np.int64)
    return data

  def _init_state(self):
    """Create all state by tracing train() once on a tiny batch: parameter
    shapes do not depend on batch size or length, and policy() and report()
    use the same modules."""
    data = self._dummy_batch(len(self.mesh.devices), 2 + self.config.replay_context)
    seed = np.array([self.seed, 0], np.uint32)
    state = nj.init(self.model.train)({}, data, self._inputs(), seed=seed)
    if hasattr(self.model, 'after_init'):
      state, _ = nj.pure(self.model.after_init)(state, seed=seed)
    self.state = jax.device_put(state, self.replicated)

  def _build(self):
    jit = jax.jit if self.config.jax.jit else (lambda f, **kw: f)
    rep, bat = self.replicated, self.batched

    def train(state, data, inputs, seed):
      state, out = nj.pure(self.model.train)(state, data, inputs, seed=seed)
      return state, out
    self._train = jit(
        train, in_shardings=(rep, bat, rep, rep), out_shardings=(rep, rep),
        donate_argnums=(0,))

    def report(state, data, inputs, seed):
      _, metrics = nj.pure(self.model.report)(state, data, inputs, seed=seed)
      return metrics
    self._report = jit(report, in_shardings=(rep, bat, rep, rep))

    def uncertainty(state, data, seed):
      # Any state writes are dropped (modify=False trips over the RSSM's
      # scan in ninjax 3.6).
      _, out = nj.pure(self.model.uncertainty)(state, data, seed=seed)
      return out
    self._uncertainty = jit(uncertainty, in_shardings=(rep, bat, rep)) \
        if hasattr(self.model, 'uncertainty') else None

    def policy(state, carry, obs, seed, mode):
      _, out = nj.pure(self.model.policy)(
          state, carry, obs, mode, seed=seed, modify=False)
      return out
    # Policy inputs and outputs live replicated on the train devices; the
    # carry from init_policy gets the same sharding so nothing recompiles.
    self._policy = {
        mode: jit(lambda s, c, o, r, m=mode: policy(s, c, o, r, m),
                  in_shardings=rep, out_shardings=rep)
        for mode in ('train', 'eval')}

    def init_policy(state, batch_size):
      _, carry = nj.pure(self.model.init_policy)(state, batch_size)
      return jax.device_put(carry, rep)
    self._init_policy = init_policy
