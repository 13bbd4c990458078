"""Steps a batch of envs with a policy and reports every transition."""

import atexit
import functools
import threading
import traceback

import numpy as np


class Driver:
  """Runs N envs in lockstep, in this process or one subprocess each.

  Policy protocol: carry, act, outs = policy(carry, obs), where obs holds
  every obs key batched over envs and act holds every act_space key except
  'reset'. Each env resets on the step after its is_last. Callbacks get
  (tran, worker) with tran = {**obs, **act, **outs} for one env, where the
  action is the one chosen at the same step as the obs.
  """

  def __init__(self, make_env_fns, parallel=False):
    assert len(make_env_fns) > 0, 'Driver needs at least one env.'
    self.parallel = parallel
    self.length = len(make_env_fns)
    self.callbacks = []
    self.carry = None
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

  def close(self):
    for env in self._envs:
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
      obs = _receive_all(self._envs)
    else:
      obs = [env.step(act) for env, act in zip(self._envs, envacts)]
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


def _receive_all(envs):
  # Drain every reply before raising so that the pipes stay in sync.
  results, error = [], None
  for env in envs:
    try:
      results.append(env.receive())
    except Exception as e:
      error = error or e
  if error:
    raise error
  return results


class _Remote:
  """Parent-side handle of one env living in its own subprocess."""

  def __init__(self, make_env, index):
    import portal  # Lazy: importing portal switches multiprocessing to spawn.
    self.index = index
    self._conn, child = portal.contextlib.context.mp.Pipe()
    # Portal cloudpickles the function, so make_env may be a lambda or closure.
    self._proc = portal.Process(
        functools.partial(_serve, make_env), child, name=f'env{index}')
    self._start()
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
      raise RuntimeError(f'Env worker {self.index} failed:\n{payload}')
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
