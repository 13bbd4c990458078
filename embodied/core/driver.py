"""Steps a batch of envs with a policy and reports every transition."""

import atexit
import functools
import sys
import threading
import time
import traceback

import numpy as np


class EnvCrashError(RuntimeError):
  """One env failed more times in a row than the Driver's max_restarts
  allows. index: the env; count: its failures in a row."""

  def __init__(self, message, index, count):
    super().__init__(message)
    self.index = index
    self.count = count


class Driver:
  """Runs N envs in lockstep, in this process or one subprocess each.

  Policy protocol: carry, act, outs = policy(carry, obs), where obs holds
  every obs key batched over envs and act holds every act_space key except
  'reset'. Each env resets on the step after its is_last. Callbacks get
  (tran, worker) with tran = {**obs, **act, **outs} for one env, where the
  action is the one chosen at the same step as the obs.

  Env failures: when an env raises in step() (a reset included) or its
  worker process dies, the driver closes it, builds a new one from its
  make-env function and carries on; the other envs are unaffected.
  - A failure in mid-episode ends that episode as a truncation: callbacks
    and the policy get the env's previous obs with reward 0, is_last True
    and is_terminal False, so replay holds no false terminal and episode
    stats close. The new env resets on the next step (is_first), as after
    any is_last; the truncation counts as an ended episode.
  - A failed reset interrupted no episode, so the new env runs the reset at
    once and its first obs (is_first) is what callbacks get.
  - The policy carry belongs to the agent, so the driver leaves it alone:
    the is_first obs that the new env sends next resets that env's slot of
    the carry in the agent, as at every episode start.
  Each restart prints one warning line to stderr, the first one of each env
  also the full traceback. `restarts` counts all restarts, stats() those
  since its last call. An env that fails again before it completes a step
  that is not a reset counts one more failure in a row; past max_restarts
  of those (0: no limit) the driver raises EnvCrashError instead.
  """

  # Seconds before the second restart in a row of one env, doubling for
  # each further one up to MAX_BACKOFF, so that a broken env or constructor
  # does not spin (with max_restarts=0 it is retried forever).
  BACKOFF = 0.1
  MAX_BACKOFF = 10.0

  def __init__(self, make_env_fns, parallel=False, max_restarts=10):
    if not len(make_env_fns):
      raise ValueError('Driver needs at least one env (run.envs >= 1).')
    if max_restarts < 0:
      raise ValueError(
          f'max_restarts (run.env_max_restarts) must be >= 0, got '
          f'{max_restarts}')
    self.parallel = parallel
    self.length = len(make_env_fns)
    self.max_restarts = max_restarts
    self.callbacks = []
    self.carry = None
    self.restarts = 0
    self._fns = list(make_env_fns)
    self._failures = [0] * self.length  # Failures in a row, per env.
    self._new_restarts = 0  # Since the last stats() call.
    self._traced = set()  # Envs whose traceback has been printed.
    self._last = [None] * self.length  # Each env's latest obs.
    self._envs = []
    if parallel:
      try:
        for index, fn in enumerate(make_env_fns):
          self._envs.append(_Remote(fn, index))
        # Start all children first so that they build their envs concurrently.
        spaces = [env.receive() for env in self._envs]
      except BaseException:
        self.close()
        raise
      self.obs_space, self.act_space = spaces[0]
    else:
      try:
        for fn in make_env_fns:
          self._envs.append(fn())
      except BaseException:
        self.close()
        raise
      self.obs_space = self._envs[0].obs_space
      self.act_space = self._envs[0].act_space
    self._act_keys = [k for k in self.act_space if k != 'reset']
    self._acts = self._reset_acts()

  def on_step(self, callback):
    self.callbacks.append(callback)

  def reset(self, init_policy):
    self.carry = init_policy(self.length)
    self._acts = self._reset_acts()

  def __call__(self, policy, steps=0, episodes=0):
    # Steps the whole batch at a time, so `steps` may be exceeded by up to N-1.
    step, episode = 0, 0
    while step < steps or episode < episodes:
      step, episode = self._step(policy, step, episode)

  def stats(self):
    """Metrics since the last call: env/restarts, the number of env
    restarts."""
    out = {'env/restarts': self._new_restarts}
    self._new_restarts = 0
    return out

  def close(self):
    for env in self._envs:
      if env is None:  # Its rebuild failed; the old one is closed already.
        continue
      try:
        env.close()
      except Exception:
        traceback.print_exc()
    self._envs = []

  def _reset_acts(self):
    # Placeholder actions; the envs ignore them because reset is set.
    acts = {
        k: np.zeros((self.length, *self.act_space[k].shape),
                    self.act_space[k].dtype)
        for k in self._act_keys}
    acts['reset'] = np.ones(self.length, bool)
    return acts

  def _step(self, policy, step, episode):
    acts = self._acts
    items = acts.items()
    envacts = [{k: v[i] for k, v in items} for i in range(self.length)]
    if self.parallel:
      for env, act in zip(self._envs, envacts):
        env.send('step', act)
      # Every reply is read before any env is rebuilt, so the pipes of the
      # other envs stay in sync.
      obs = [_attempt(env.receive) for env in self._envs]
    else:
      obs = [_attempt(env.step, act) for env, act in zip(self._envs, envacts)]
    for i, result in enumerate(obs):
      if isinstance(result, Exception):
        obs[i] = self._recover(i, result, envacts[i])
      elif not envacts[i]['reset']:
        # Only a step within an episode clears the count, so that an env
        # that resets fine but fails on every first action is given up too.
        self._failures[i] = 0
    self._last = obs
    # np.array is several times faster than np.stack for lists of small arrays.
    obs = {k: np.array([o[k] for o in obs]) for k in obs[0]}
    self.carry, acts, outs = policy(self.carry, obs)
    acts = {k: np.asarray(acts[k]) for k in self._act_keys}
    if self.callbacks:
      trans = {**obs, **acts, **outs}
      for i in range(self.length):
        tran = {k: v[i] for k, v in trans.items()}
        for fn in self.callbacks:
          fn(tran, i)
    acts['reset'] = obs['is_last']
    self._acts = acts
    return step + self.length, episode + int(obs['is_last'].sum())

  def _recover(self, index, error, act):
    """Replaces the failed env `index` by a new one; returns the obs that
    the policy and callbacks get for it at this step (see the class doc).
    A failed rebuild, or reset on the new env, counts as one more failure
    in a row and is retried."""
    while True:
      self._failures[index] += 1
      count = self._failures[index]
      if self.max_restarts and count > self.max_restarts:
        raise EnvCrashError(
            f'Env {index} failed {count} times in a row ({self.max_restarts} '
            'restarts without completing a step; raise run.env_max_restarts '
            f'to allow more, 0 for no limit). Last error: {_summary(error)}',
            index, count) from error
      self.restarts += 1
      self._new_restarts += 1
      limit = f'/{self.max_restarts}' if self.max_restarts else ''
      print(f'Warning: restarting env {index} (failure {count}{limit} in a '
            f'row) after {_summary(error)}', file=sys.stderr, flush=True)
      if index not in self._traced:
        self._traced.add(index)
        print(f'Env {index} error (traceback shown once per env):\n'
              f'{_details(error).rstrip()}', file=sys.stderr, flush=True)
      if count > 1:
        time.sleep(min(self.BACKOFF * 2 ** (count - 2), self.MAX_BACKOFF))
      try:
        self._rebuild(index)
        if act['reset']:
          return self._step_one(index, act)
        return self._truncation(index)
      except Exception as e:
        error = e

  def _rebuild(self, index):
    env, self._envs[index] = self._envs[index], None
    if env is not None:  # None: the previous rebuild failed.
      try:
        env.close()
      except Exception:
        pass  # A crashed env may fail to close too; it is replaced anyway.
    if self.parallel:
      env = _Remote(self._fns[index], index)
      try:
        env.receive()  # Its spaces; raises if the constructor failed.
      except BaseException:
        env.close()
        raise
    else:
      env = self._fns[index]()
    self._envs[index] = env

  def _step_one(self, index, act):
    if self.parallel:
      self._envs[index].send('step', act)
      return self._envs[index].receive()
    return self._envs[index].step(act)

  def _truncation(self, index):
    """The env's previous obs as the last step of an episode cut short.
    There always is one: only a reset can be an env's first step."""
    obs = dict(self._last[index])
    obs['reward'] = np.zeros((), self.obs_space['reward'].dtype)
    obs['is_first'] = np.bool_(False)
    obs['is_last'] = np.bool_(True)
    obs['is_terminal'] = np.bool_(False)
    return obs


def _attempt(fn, *args):
  """fn(*args), or the exception it raised."""
  try:
    return fn(*args)
  except Exception as e:
    return e


def _summary(error):
  """The error in one line, for warnings and EnvCrashError."""
  if isinstance(error, _WorkerError):
    return error.summary
  lines = str(error).strip().splitlines()
  if not lines:
    return type(error).__name__
  return f'{type(error).__name__}: {lines[0]}'


def _details(error):
  """The full traceback: a worker's own, else the one in this process."""
  if isinstance(error, _WorkerError):
    return error.details
  return ''.join(traceback.format_exception(error))


class _WorkerError(RuntimeError):
  """An exception inside an env worker; details holds its traceback."""

  def __init__(self, index, details):
    super().__init__(f'Env worker {index} failed:\n{details}')
    lines = [line for line in details.splitlines() if line.strip()]
    self.summary = lines[-1].strip() if lines else 'unknown error'
    self.details = details


class _Remote:
  """Parent-side handle of one env living in its own subprocess."""

  def __init__(self, make_env, index):
    import portal  # Lazy: importing portal switches multiprocessing to spawn.
    self.index = index
    self._conn, child = portal.contextlib.context.mp.Pipe()
    # Portal cloudpickles the function, so make_env may be a lambda or closure.
    self._proc = portal.Process(
        functools.partial(_serve, make_env), child, name=f'env{index}')
    try:
      self._start()
    except BaseException:
      self._conn.close()
      atexit.unregister(self._proc.kill)  # See close().
      raise
    finally:
      # Only the child may hold its end, so that its death reads as EOF here.
      child.close()

  def _start(self):
    # Portal's start() waits on a barrier that a child dying during startup
    # never reaches, so a watchdog breaks the barrier instead of hanging.
    started = threading.Event()

    def watch():
      while not started.wait(0.1):
        if self._proc.process.exitcode is not None:
          self._proc.ready.abort()
          return

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
      self._proc.start()
    except threading.BrokenBarrierError:
      self._proc.process.join()
      raise RuntimeError(
          f'Env worker {self.index} exited during startup (exit code '
          f'{self._proc.process.exitcode}). If the main module starts envs at '
          "import time, guard that code with if __name__ == '__main__'.")
    finally:
      started.set()
      watchdog.join()

  def send(self, kind, payload=None):
    try:
      self._conn.send((kind, payload))
    except (BrokenPipeError, ConnectionResetError):
      pass  # The child died; receive() reports it with the exit code.

  def receive(self):
    try:
      status, payload = self._conn.recv()
    except (EOFError, ConnectionResetError):
      self._proc.join(1)
      raise RuntimeError(
          f'Env worker {self.index} died (exit code {self._proc.exitcode}).')
    if status == 'error':
      raise _WorkerError(self.index, payload)
    return payload

  def close(self, timeout=5):
    self.send('close')
    self._proc.join(timeout)
    if self._proc.running:
      self._proc.kill()
    self._conn.close()
    # Portal's exit hook would otherwise later kill the children of whatever
    # process reuses this pid, and it keeps the handle alive until exit.
    atexit.unregister(self._proc.kill)


def _serve(make_env, conn):
  """Child loop: build the env, then answer step requests until told to close."""
  env = None
  try:
    env = make_env()
    conn.send(('ok', (env.obs_space, env.act_space)))
  except Exception:
    conn.send(('error', traceback.format_exc()))
  while True:
    try:
      kind, payload = conn.recv()
    except EOFError:
      break  # The parent is gone.
    if kind == 'close':
      break
    try:
      if env is None:
        raise RuntimeError('The env failed to build, see the first error.')
      assert kind == 'step', kind
      conn.send(('ok', env.step(payload)))
    except Exception:
      conn.send(('error', traceback.format_exc()))
  if env is not None:
    try:
      env.close()
    except Exception:
      traceback.print_exc()
  conn.close()
  return 0
