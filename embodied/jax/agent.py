"""Host-side wrapper that turns a ninjax model into a jitted, sharded agent.

The model is a ninjax module with methods
  init_policy(batch_size) -> carry
  policy(carry, obs, mode) -> (carry, act, outs)
  train(data, inputs) -> (outs, metrics)
  report(data, inputs) -> metrics
  uncertainty(data) -> [B, T] per-step values (optional; no state change)
  after_init() (optional): adjusts the freshly created state once
  rename_checkpoint(data) (optional): a checkpoint's {name: value} under the
    names the model now gives its state (load() applies it, so that logdirs
    written before a renaming still resume)
and optionally an attribute `host`: per-run host state whose inputs()
({name: {key: array}}, fixed shapes) enter train() and report() as
replicated input arrays on every call, so new values never recompile.
The wrapper owns the state (parameters, optimizer and normaliser state),
compiles each method once, shards the batch over `train_devices` and keeps
everything else replicated. The policy reads the train state, or, on devices
of its own (`policy_devices`) or with several processes, a copy refreshed
lazily after train steps. With JAX's multi-process runtime the train mesh
spans every process's train devices; the replicated state is created equal
on each process (same seed) and kept equal (same batches, seeds, inputs).
"""

import copy
import time

import jax
import ninjax as nj
import numpy as np

from embodied.core import base, seeds
from embodied.core.axis import MemberAxis
from . import hosts, nets


class PlatformError(RuntimeError):
  pass


# jax.compute_dtype: auto picks bfloat16 on accelerators, float32 on CPUs.
# float16 is not offered: without loss scaling its 5-bit exponent
# underflows small gradients.
COMPUTE_DTYPES = ('auto', 'float32', 'bfloat16')
PLATFORMS = ('auto', 'cpu', 'cuda', 'gpu', 'tpu')

# Config checks (dreamerv3/validate.py) of the jax.* keys this module reads.
RANGES = ((r'jax\.(train|policy)_devices', 'int', 0, None),)
CHOICES = {'jax.compute_dtype': COMPUTE_DTYPES, 'jax.platform': PLATFORMS}


def check_devices(config, count, processes=1):
  """`count` local devices in each of `processes` processes (see
  hosts.split_devices)."""
  train, policy = config.jax.train_devices, config.jax.policy_devices
  where = f' in each of {processes} processes' if processes > 1 else ''
  if train > count:
    return (f'jax.train_devices is {train} but JAX sees {count} device(s)'
            f'{where}')
  if policy and (train or 1) + policy > count:
    return (f'jax.policy_devices is {policy} but JAX sees {count} device(s)'
            f'{where}, of which jax.train_devices takes {train or "the rest"} '
            '(the policy needs devices after the train devices)')
  devices = (train or count - policy) * processes
  if config.batch_size % devices:
    return (f'batch_size ({config.batch_size}) must be divisible by the '
            f'{devices} train devices (jax.train_devices {train}, 0 = all'
            + (f', x {processes} processes' if processes > 1 else '') + ')')
  if policy:
    keys = ['envs'] + (['eval_envs'] if config.script in (
        'train_eval', 'eval_only') else [])
    for key in keys:
      if config.run[key] % policy:
        return (f'run.{key} ({config.run[key]}) must be divisible by '
                f'jax.policy_devices ({policy}): the envs are split over them')
  return None


def check_processes(config, settings):
  if config.batch_size % settings.num_processes:
    return (f'batch_size ({config.batch_size}) must be divisible by the '
            f'{settings.num_processes} processes (jax.distributed): each '
            'samples its share')
  return None


_SETUP = {}  # The arguments and result of this process's last setup().


def setup(platform='auto', compute_dtype='auto', debug_nans=False,
          xla_flags='', cache_dir='', distributed=None):
  """Choose the JAX platform and compute dtype once per process. With a
  cache_dir, compiled programs are cached on disk so a restarted or resumed
  run with the same shapes skips compilation. distributed: hosts.Settings
  (or None for one process) starts JAX's multi-process runtime first.
  Calling it again with the same arguments does nothing, so every process
  that builds an agent can call it (the parallel script's actor too)."""
  args = (platform, compute_dtype, debug_nans, xla_flags, cache_dir,
          distributed)
  if _SETUP.get('args') == args:
    return _SETUP['result']
  if xla_flags:
    import os
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' +
                               xla_flags).strip()
  if distributed:
    # Before the first device query: the backends are built once.
    hosts.initialize(distributed)
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
        f'{devices[0].device_kind}), compute dtype {compute_dtype}' +
        (f', process {jax.process_index()} of {jax.process_count()}'
         if jax.process_count() > 1 else ''))
  _SETUP.update(args=args, result=(platform, compute_dtype))
  return platform, compute_dtype


def _to_host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


class Agent(base.Agent):

  def __init__(self, model_fn, obs_space, act_space, config, seed=0,
               members=None):
    """model_fn(obs_space, act_space, config, name=...) -> ninjax module.
    config needs batch_size (global, over all processes), batch_length,
    replay_context and a `jax` sub-config with train_devices (int per
    process, 0 = all the policy leaves), optional policy_devices (int, 0 =
    the policy runs on the train devices) and jit (bool). With several
    processes, train() and uncertainty() take this process's
    batch_size / processes rows and every process must call them in step;
    policy() and report() run on this process alone.

    members: None for one agent, or the seeds of N independent agents
    trained as one program: every state array gets a leading member axis,
    and so do the batches, carries, observations, host inputs and outputs
    of every method (obs [N, envs, ...], batches [N, B, T, ...]). The steps
    are vmapped over the axis, which is sharded over the train devices (N
    divisible by their number; one process, no policy devices). Member k
    draws from its own stream of seed members[k], as a one-agent run with
    that seed does."""
    self.obs_space = {
        k: v for k, v in obs_space.items() if not k.startswith('log/')}
    self.act_space = {k: v for k, v in act_space.items() if k != 'reset'}
    self.config = config
    self.model = model_fn(self.obs_space, self.act_space, config, name='agent')
    # Extra per-step keys the model keeps in replay (e.g. latents).
    self.ext_space = self.model.ext_space() if hasattr(
        self.model, 'ext_space') else {}
    self.axis = MemberAxis(members, seed)
    self.seed = seed
    # Host state of the model (schedules fed by the run loop), one per
    # member, each fed by its member's envs; none without.
    host = getattr(self.model, 'host', None)
    self.hosts = [host] + [copy.deepcopy(host) for _ in range(
        self.axis.count - 1)] if host else []
    # Random streams per member: 'main' for training and acting, which run
    # in step with the env; reports, evaluation and priority refreshes run
    # when the loop's schedule says, so each has its own stream and leaves
    # the main one as it was.
    self._rngs = {'main': [np.random.default_rng(s)
                           for s in self.axis.seeds]}

    self._version = 0  # Bumped by every assignment to self.state.
    self._make_meshes(config.jax)
    self._compile_time = {}
    self._init_state()
    self._build()

  # Devices and hosts.

  @property
  def state(self):
    return self._state

  @state.setter
  def state(self, value):
    # The version tells the policy's copy of the parameters that it is stale.
    self._state = value
    self._version += 1

  def _make_meshes(self, jconfig):
    """The train mesh spans the train devices of every process (axis
    'batch', process by process, so process p owns rows p*B/P..(p+1)*B/P of
    a global batch of B rows); the policy mesh holds this process's policy
    devices. Without policy devices of its own and with one process, the
    policy runs on the train mesh and reads the train state directly (no
    copy); otherwise it reads a copy made lazily after each train step."""
    P = jax.sharding.PartitionSpec
    self.processes, self.process = jax.process_count(), jax.process_index()
    npolicy = jconfig.get('policy_devices', 0)
    train, policy = hosts.split_devices(
        jax.local_devices(), jconfig.train_devices, npolicy)
    per_process = {}
    for device in jax.devices():
      per_process.setdefault(device.process_index, []).append(device)
    devices = [d for p in sorted(per_process)
               for d in per_process[p][:len(train)]]
    if not self.axis.stacked and self.config.batch_size % len(devices):
      raise ValueError(
          f'batch_size {self.config.batch_size} is not divisible by the '
          f'{len(devices)} train devices (jax.train_devices'
          + (f' x {self.processes} processes' if self.processes > 1 else '')
          + ').')
    self.mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
    self.replicated = jax.sharding.NamedSharding(self.mesh, P())
    self.batched = jax.sharding.NamedSharding(self.mesh, P('batch'))
    # Where the state and the host inputs live: replicated, or with members
    # split over the devices along the member axis, like the batches.
    self.shared = self.batched if self.axis.stacked else self.replicated
    if self.axis.stacked and (npolicy or self.processes > 1 or
                              self.axis.count % len(devices)):
      raise ValueError(
          f'{self.axis.count} members need one process, no policy devices '
          f'and a member count divisible by the {len(devices)} train devices.')
    self._own_policy = bool(npolicy) or self.processes > 1
    if self._own_policy:
      self.policy_mesh = jax.sharding.Mesh(np.array(policy), ('batch',))
      self.policy_replicated = jax.sharding.NamedSharding(
          self.policy_mesh, P())
      # Own policy devices split the env batch; the train devices of a
      # process replicate it, as with one process.
      self.policy_batched = jax.sharding.NamedSharding(
          self.policy_mesh, P('batch') if npolicy else P())
    else:
      self.policy_mesh = self.mesh
      self.policy_replicated, self.policy_batched = (
          self.replicated, self.shared)
    self._policy_keys = None  # State keys the policy reads (own policy).
    self._policy_copy = (-1, None)  # (state version, state on policy mesh)
    if self.processes > 1:
      # Train seeds of their own, drawn only by the programs that run on
      # every process in step, so acting and reporting (which each process
      # does at its own times) cannot make the processes' seeds diverge.
      self._shared_rng = np.random.default_rng(self.seed)
      # Batches are this process's rows of the global batch.
      self._put = self._put_process_rows

  def _policy_state(self):
    """The state the policy reads: the train state itself, or its policy
    keys copied to the policy devices, at most once per state version and
    only when the policy runs (no recompilation: same shardings)."""
    if not self._own_policy:
      return self.state
    version, copy = self._policy_copy
    if version != self._version:
      if self._policy_keys is None:
        self._policy_keys = self._find_policy_keys()
      copy = self._local_copy(
          {k: self.state[k] for k in self._policy_keys},
          self.policy_replicated)
      self._policy_copy = (self._version, copy)
    return copy

  def _find_policy_keys(self):
    """Trace both policy modes once (nothing runs) to learn which state
    entries they read; the optimizer state, for one, stays behind."""
    keys = set()
    state = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
             for k, v in self.state.items()}
    def init(state):
      _, carry, read, _, _ = nj.pure(self.model.init_policy)(
          state, 1, modify=False, track=True)
      keys.update(read)
      return carry
    carry = jax.eval_shape(init, state)
    obs = {k: jax.ShapeDtypeStruct((1, *v.shape), v.dtype)
           for k, v in self.obs_space.items()}
    seed = jax.ShapeDtypeStruct((2,), np.uint32)
    for mode in ('train', 'eval'):
      def probe(state, carry, obs, seed, mode=mode):
        _, out, read, _, _ = nj.pure(self.model.policy)(
            state, carry, obs, mode, seed=seed, modify=False, track=True)
        keys.update(read)
        return out
      jax.eval_shape(probe, state, carry, obs, seed)
    return sorted(k for k in keys if k in self.state)

  @staticmethod
  def _local_copy(tree, sharding):
    """Replicated (possibly multi-process) arrays -> copies on this
    process's devices of `sharding`, from the first local replica."""
    return jax.device_put(
        jax.tree.map(lambda x: x.addressable_data(0), tree), sharding)

  def _replicate(self, tree):
    """Host values that are equal on every process -> replicated arrays on
    the train mesh (multi-process: each process fills its own devices, no
    communication)."""
    if self.processes == 1:
      return jax.device_put(tree, self.shared)
    tree = jax.tree.map(np.asarray, jax.device_get(tree))
    return jax.tree.map(lambda x: jax.make_array_from_callback(
        x.shape, self.replicated, lambda index: x[index]), tree)

  def _put_process_rows(self, data):
    """Multi-process _put: this process's rows -> the global batch; arrays
    already on the train mesh pass through."""
    data = {k: v for k, v in data.items() if not k.startswith('log/')}
    def put(value):
      if isinstance(value, jax.Array) and value.sharding == self.batched:
        return value
      value = np.asarray(value)
      shape = (value.shape[0] * self.processes, *value.shape[1:])
      return jax.make_array_from_process_local_data(
          self.batched, value, shape)
    return {k: put(v) for k, v in data.items()}

  # Public API.

  def init_policy(self, batch_size):
    return self._init_policy(self._policy_state(), batch_size)

  def policy(self, carry, obs, mode='train'):
    obs = {k: obs[k] for k in self.obs_space}
    carry, act, outs = self._call(
        f'policy_{mode}', self._policy[mode], self._policy_state(), carry,
        obs, self._next_seed('main' if mode == 'train' else mode))
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
        self._next_seed('report'))
    return _to_host(metrics)

  def uncertainty(self, data):
    """The model's per-step uncertainty of a batch shaped like a train
    batch, e.g. to refresh replay priorities; leaves the state unchanged."""
    if self._uncertainty is None:
      raise NotImplementedError(
          f'{type(self.model).__name__} has no uncertainty() method.')
    data = self._put(data)
    out = self._call('uncertainty', self._uncertainty, self.state, data,
                     self._next_seed('uncertainty'))
    return _to_host(out)

  def host_work(self, replay, prepare):
    """The model's host-side work in the train loop: objects with
    outputs(outs), updated(updates) and stats() (none without)."""
    work = getattr(self.model, 'host_work', None)
    return work(self, replay, prepare) if work else []

  def agree(self, *flags):
    """Run-loop decisions that every process must share (stop, save):
    with several processes, a flag holds when it holds on any of them, so
    none waits in a collective for a peer that left the loop. One small
    all-gather per call; a single process gets its flags back."""
    if self.processes == 1:
      return tuple(bool(f) for f in flags)
    local = np.array([bool(f) for f in flags], np.int32)
    everyone = hosts.allgather(local)
    return tuple(bool(x) for x in everyone.reshape(-1, len(flags)).any(0))

  def save(self):
    """The state as NumPy: arrays this process holds whole (one process,
    members split over devices included) are gathered, replicated
    multi-process ones read from this process's first replica (no
    communication between processes)."""
    return {k: np.asarray(jax.device_get(v) if v.is_fully_addressable
                          else v.addressable_data(0))
            for k, v in self.state.items()}

  def load(self, data):
    rename = getattr(self.model, 'rename_checkpoint', None)
    if rename:
      data = rename(data)
    have = {k: (v.shape, v.dtype) for k, v in self.state.items()}
    got = {k: (np.shape(v), np.asarray(v).dtype) for k, v in data.items()}
    if set(got) == set(have) and all(
        got[k][0] == self.axis.member_shape(have[k][0]) for k in have):
      # A one-agent checkpoint initialises every member alike.
      data = self.axis.stack([{k: data[k] for k in have}] * self.axis.count)
      got = {k: (have[k][0], got[k][1]) for k in have}
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
    if self.processes > 1:
      # Each process may hold its own checkpoint; all continue from process
      # 0's so the replicas agree. Every process must call load().
      state = hosts.broadcast(state)
    self.state = self._replicate(state)

  def param_counts(self):
    """Parameter count per top-level network (optimizer state excluded)."""
    counts = {}
    for key, value in self.state.items():
      parts = key.split('/')
      if len(parts) < 3 or 'opt' in parts[1]:
        continue
      shape = self.axis.member_shape(value.shape)
      counts[parts[1]] = counts.get(parts[1], 0) + int(np.prod(shape))
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
    """The hosts' current inputs as float32 NumPy arrays in the member
    layout ({} without hosts)."""
    if not self.hosts:
      return {}
    return self.axis.stack([
        {k: {n: np.asarray(v, np.float32) for n, v in d.items()}
         for k, d in host.inputs().items()} for host in self.hosts])

  @property
  def rng(self):
    """The main random stream of a one-seed agent (tests restart it)."""
    return self._rngs['main'][0]

  @rng.setter
  def rng(self, value):
    self._rngs['main'] = [value]

  @property
  def rngs(self):
    """The members' main random streams (tests restart them)."""
    return self._rngs['main']

  @rngs.setter
  def rngs(self, value):
    self._rngs['main'] = list(value)

  def _next_seed(self, stream='main'):
    if stream not in self._rngs:
      self._rngs[stream] = [
          np.random.default_rng(seeds.stream(s, stream))
          for s in self.axis.seeds]
    draws = [np.asarray(r.integers(0, 2 ** 31, 2), np.uint32)
             for r in self._rngs[stream]]
    return self.axis.stack(draws)

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
    use the same modules. Each member is initialised as a one-agent run
    with its seed, by one initialiser called per seed: its compile time
    does not grow with the members (a vmapped one grew ~linearly)."""
    data = self._dummy_batch(len(self.mesh.devices), 2 + self.config.replay_context)
    init = nj.init(self.model.train)
    after_init = getattr(self.model, 'after_init', None)
    after_init = after_init and jax.jit(nj.pure(after_init))

    def init_one(inputs, seed):
      seed = np.array([seed, 0], np.uint32)
      state = init({}, data, inputs, seed=seed)
      if after_init:
        state, _ = after_init(state, seed=seed)
      return jax.tree.map(np.asarray, state)

    state = self.axis.stack([
        init_one(inputs, seed) for inputs, seed in zip(
            self.axis.split(self._inputs()), self.axis.seeds)])
    # Same seed, program and platform: equal values on every process.
    self.state = self._replicate(state)

  def _build(self):
    jit = jax.jit if self.config.jax.jit else (lambda f, **kw: f)
    # Every program maps over the member axis: one program, no Python loop
    # over members.
    each = lambda fn: self.axis.map(fn, jax.vmap)
    bat, shared = self.batched, self.shared

    def train(state, data, inputs, seed):
      state, out = nj.pure(self.model.train)(state, data, inputs, seed=seed)
      return state, out
    self._train = jit(
        each(train), in_shardings=(shared, bat, shared, shared),
        out_shardings=(shared, shared), donate_argnums=(0,))

    def report(state, data, inputs, seed):
      _, metrics = nj.pure(self.model.report)(state, data, inputs, seed=seed)
      return metrics
    self._report = jit(each(report), in_shardings=(shared, bat, shared, shared))

    def uncertainty(state, data, seed):
      # Any state writes are dropped (modify=False trips over the RSSM's
      # scan in ninjax 3.6).
      _, out = nj.pure(self.model.uncertainty)(state, data, seed=seed)
      return out
    self._uncertainty = jit(
        each(uncertainty), in_shardings=(shared, bat, shared)) \
        if hasattr(self.model, 'uncertainty') else None

    def policy(state, carry, obs, seed, mode):
      _, out = nj.pure(self.model.policy)(
          state, carry, obs, mode, seed=seed, modify=False)
      return out
    # Policy inputs and outputs live with the state on the train devices;
    # the carry from init_policy gets the same sharding so nothing
    # recompiles.
    self._policy = {
        mode: jit(each(lambda s, c, o, r, m=mode: policy(s, c, o, r, m)),
                  in_shardings=shared, out_shardings=shared)
        for mode in ('train', 'eval')}

    def init_policy(state, batch_size):
      fn = lambda s: nj.pure(self.model.init_policy)(s, batch_size)[1]
      carry = each(fn)(state)
      return jax.device_put(carry, self.policy_batched)
    self._init_policy = init_policy

    if self._own_policy:
      prep, pbat = self.policy_replicated, self.policy_batched
      self._policy = {
          mode: jit(lambda s, c, o, r, m=mode: policy(s, c, o, r, m),
                    in_shardings=(prep, pbat, pbat, prep),
                    out_shardings=pbat)
          for mode in ('train', 'eval')}
    if self.processes > 1:
      self._train = self._in_step(self._train, returns_state=True)
      if self._uncertainty is not None:
        self._uncertainty = self._in_step(self._uncertainty)
      self._report = self._on_this_process(jit(
          report, in_shardings=(self.policy_replicated,) * 4))

  def _in_step(self, fn, returns_state=False):
    """Multi-process wrapper of a program that every process runs in step
    (train, uncertainty): host inputs from process 0 and seeds from the
    shared stream, so the replicas stay equal; outputs as this process's
    local arrays, with its own rows of per-sequence outputs."""
    def wrapped(state, data, *rest):
      *inputs, _ = rest
      if inputs and inputs[0]:
        inputs = [hosts.broadcast(inputs[0])]
      seed = np.asarray(self._shared_rng.integers(0, 2 ** 31, 2), np.uint32)
      out = fn(state, data, *inputs, seed)
      total = next(iter(data.values())).shape[0]
      size = total // self.processes
      def local(x):
        x = x.addressable_data(0)
        if x.ndim and x.shape[0] == total:
          x = x[self.process * size:(self.process + 1) * size]
        return x
      if not returns_state:
        return jax.tree.map(local, out)
      state, out = out
      return state, jax.tree.map(local, out)
    wrapped._cache_size = getattr(fn, '_cache_size', lambda: 0)
    return wrapped

  def _on_this_process(self, fn):
    """Multi-process report: on this process's rows and a local copy of the
    state, so each process reports at its own times without the others."""
    def wrapped(state, data, inputs, seed):
      def rows(x):
        shards = sorted(x.addressable_shards,
                        key=lambda s: s.index[0].start or 0)
        return np.concatenate([np.asarray(s.data) for s in shards])
      data = {k: rows(v) for k, v in data.items()}
      return fn(self._local_copy(state, self.policy_replicated), data,
                inputs, seed)
    wrapped._cache_size = getattr(fn, '_cache_size', lambda: 0)
    return wrapped
