"""The parallel script: env workers, an actor, a replay server and the
learner as separate processes on portal, started by one command.

  env worker i --act(obs)--> actor (batched policy, all envs)
       |                       ^ params every run.sync_every seconds
       +--add(steps)--> replay server <--sample / write-back-- learner
                       (Replay + SamplesPerInsert)        (this process:
                                                           agent, logger,
                                                           checkpoints)

- Envs: run.envs envs in total, split as evenly as possible over
  run.env_workers processes (at most one per env). Each worker steps its
  envs in lockstep with the existing Driver, so run.parallel_envs still puts
  every env of a worker into its own subprocess; env i is built with
  make_env(i) as in `train`.
- Train ratio: the replay server grants inserts and samples so that
  replayed steps stay within run.ratio_tolerance of run.train_ratio times
  the env steps past the prefill (see ratelimit.SamplesPerInsert); actors
  block on insert when ahead, the learner on sample.
- Addresses: run.replay_addr and run.actor_addr ('host:port'; '' picks a
  free port on this machine). Servers listen on every interface of their
  port, so other machines reach them at host:port.
- Several machines: each command starts the processes of
  run.parallel_roles (all, or some of learner, replay, actor, envs) and,
  for envs, the workers run.env_worker_ids; all commands need the same
  config and both addresses. The replay server keeps its chunks in its
  machine's LOGDIR/replay and the learner the checkpoint in its LOGDIR/ckpt,
  so resume with the same roles on the same machines (or share the logdir).
  A command supervises only its own processes: the learner waits while a
  server on another machine is away (portal reconnects).
- Checkpoints: the learner takes one snapshot of replay, limiter counters
  and the light steps not yet seen (remote.ReplayServer.snapshot), feeds
  those to the host state, and saves it with the agent into one checkpoint
  folder. A resume restores all of it before any new step is inserted: it
  loses at most the steps since the last save and duplicates none.
- Failures: a worker that exits with an error is restarted (its envs begin
  new episodes; the cut episode has no is_last in replay, as after a
  resume). An actor that dies is restarted at its address by the command
  that runs it: requests reach it once it is up (portal reconnects and
  resends), the learner sends it parameters as soon as it reconnects, and
  the envs continue with a fresh policy carry. More than
  run.env_max_restarts restarts of one process in a row without an env
  step in between (0: no limit) stop the job. If the replay server dies,
  the job stops with a message naming it (its buffer lives in it); the
  last checkpoint and the written replay chunks stay.
- Only this process writes the logger's files. Metrics: those of `train`
  (episode/*, train/*, replay/*, fps/*) plus parallel/* (per-process
  rates, wait fractions, actor batch and queue) and replay/insert_wait,
  replay/sample_wait (mean seconds per call). Policy videos of env 0 (every
  run.video_every seconds) are recorded by env worker 0 and reach the
  logger through the replay server's stats.
"""

import atexit
import multiprocessing
import os
import pickle
import sys
import threading
import time

import elements

from embodied.core import Checkpoint, Preempted, Preemption
from embodied.core.ratelimit import SamplesPerInsert

from .. import common
from ..loop import Loop
from ..train import resume
from . import remote


ROLES = ('learner', 'replay', 'actor', 'envs')


class ParallelError(RuntimeError):
  """A process of the job failed in a way that stops the job."""


def parallel(make_agent, make_replay, make_env, make_logger, args):
  logdir = elements.Path(args.logdir)
  # Stop signals (SLURM's USR1 / TERM) reach the learner only: the other
  # processes ignore them, so the final snapshot can still be taken.
  preempt = Preemption()
  job = Job(make_agent, make_replay, make_env, args)
  job.start()
  step = None
  try:
    if 'learner' in job.roles:
      step = _learn(job, make_agent, make_logger, args, logdir, preempt)
    else:
      job.serve(preempt)
  finally:
    job.close()
    preempt.close()
  if preempt.requested and step is not None:
    raise Preempted(preempt.signal, step)  # The learner saved first.
  if preempt.requested:
    print(f'Stopped by {preempt.signal}.')


def _learn(job, make_agent, make_logger, args, logdir, preempt):
  agent = make_agent()
  logger = make_logger()
  step = logger.step
  episodes = common.Episodes(logger)
  host = agent.hosts[0] if agent.hosts else None  # One seed here.
  actor = None
  actor_back = threading.Event()  # Connected to a (restarted) actor.

  def check():
    """The job's health check, run also while the learner waits on the
    replay server: an actor that came back (restarted here or on another
    machine) gets parameters at once, since env steps, and hence the
    samples the learner may be waiting for, need them."""
    job.check()
    if actor and actor_back.is_set():
      actor_back.clear()
      send_params()

  def send_params():
    state = pickle.dumps(agent.save())
    ask = lambda: actor.call('params', state)
    remote.call(ask(), check, resend=ask, client=actor,
                what='reply from the actor to its parameters')

  replay = remote.ReplayClient(
      job.replay_addr, args.batch_size, args.batch_length, check,
      args.steps)
  learner = common.Learner(
      agent, replay, args.batch_size, args.replay_context,
      args.get('prefetch', True))

  # Two: a damaged newest one falls back to the one before.
  checkpoint = Checkpoint(logdir / 'ckpt', keep=2)
  checkpoint.register('step', step)
  checkpoint.register('agent', agent)
  checkpoint.register('replay', replay.part('replay'))
  checkpoint.register('limiter', replay.part('limiter'))
  if host:
    checkpoint.register('host', host)
  resume(checkpoint, args.from_checkpoint)
  replay.step = int(step)
  replay.open()  # From here on workers insert.

  actor = remote.client(job.actor_addr, 'ActorClient')
  job.watch_servers({'replay': replay.client, 'actor': actor})
  actor.socket.callbacks_conn.append(actor_back.set)
  actor_back.clear()
  send_params()

  def feed():
    """Light steps from the replay server: episode statistics (logged at
    the env step they ended on) and the host state."""
    for env, index, tran in replay.events:
      env = int(env)  # Numbers arrive as NumPy scalars.
      step.load(int(index))
      episodes(tran, env)
      if host:
        host.on_step(tran, env)
    replay.events.clear()
    step.load(max(int(step), replay.step))

  def save():
    replay.snapshot()
    feed()
    step.load(replay.step)
    checkpoint.save(int(step))

  rates = Rates(job)
  loop = Loop(args, step, preempt, learner, [logger], save=save,
              stats=lambda: [rates(learner.updates, replay, actor)])
  should_sync = elements.when.Clock(args.sync_every, first=False)
  sync = None

  print(f'Start training at step {int(step):,} (until {int(args.steps):,}).')
  pid = lambda proc: f' (pid {proc.pid})' if proc else ''
  print(f'Parallel: {len(job.groups)} env workers '
        f'({", ".join(str(len(g)) for g in job.groups)} envs), replay at '
        f'{job.replay_addr}{pid(job.replay_proc)}, actor at '
        f'{job.actor_addr}{pid(job.actor_proc)}.', flush=True)

  while True:
    check()
    if not loop.running():
      break
    try:
      loop.train()
    except remote.Finished:
      break
    feed()
    if should_sync() and (sync is None or sync.done()):
      if sync is not None:
        sync.result()  # Raises the actor's error, if any.
      sync = actor.call('params', pickle.dumps(agent.save()))
    loop.tick()

  feed()
  loop.finish()
  actor.close(timeout=1)
  replay.close()
  return int(step)


class Job:
  """Starts the server and worker processes and watches them: check()
  restarts env workers that exited with an error and raises ParallelError
  when the replay server or the actor is gone."""

  def __init__(self, make_agent, make_replay, make_env, args):
    import portal  # Lazy: importing portal switches multiprocessing to spawn.
    self.portal = portal
    self.make_agent, self.make_replay, self.make_env = \
        make_agent, make_replay, make_env
    self.args = args
    self.roles, self.groups, self.mine = layout(args)
    self.replay_addr = _addr(args.replay_addr)
    self.actor_addr = _addr(args.actor_addr)
    self.replay_proc = None
    self.actor_proc = None
    self.workers = {}
    self.progress = {i: multiprocessing.get_context('spawn').Value('q', 0)
                     for i in self.mine}
    self.failures = {i: 0 for i in self.mine}  # Failures in a row.
    self.seen = {i: 0 for i in self.mine}  # Progress at the latest start.
    self.restarts = 0
    self.actor_starts = 0
    self.actor_failures = 0  # In a row, without an env step in between.
    self.actor_seen = 0  # Env steps of this command at the actor's start.
    self.closed = False
    self._last_check = 0.0
    self._watched = {}  # name -> client of servers other commands run.
    self._lost = {}  # name -> when its client lost the connection.

  def start(self):
    args = self.args
    batch_steps = common.trained_steps(args)
    min_steps = common.fill_steps(args)
    largest = max(len(g) for g in self.groups)
    floor = SamplesPerInsert.minimum(args.train_ratio, largest, batch_steps)
    tolerance = max(float(args.ratio_tolerance), floor)
    if args.ratio_tolerance and args.ratio_tolerance < floor:
      print(f'Note: run.ratio_tolerance {args.ratio_tolerance} is below '
            f'{floor:g}, the least that cannot stall both sides; using '
            f'{floor:g}.', file=sys.stderr)
    self.tolerance = tolerance
    if 'replay' in self.roles:
      self.replay_proc = self._process(
          remote.serve_replay, self.make_replay, self.replay_addr,
          args.train_ratio, tolerance, min_steps, int(args.steps),
          len(self.groups), name='replay')
    if 'actor' in self.roles:
      self._start_actor()
    for index in self.mine:
      self._start_worker(index)
    threading.Thread(target=self._watchdog, daemon=True).start()

  def serve(self, preempt):
    """A command without the learner: supervises its processes until its
    env workers are done (servers: until a stop signal), and with env
    workers watches the servers that other commands run."""
    print(f'Parallel roles {", ".join(self.roles)}: replay at '
          f'{self.replay_addr}, actor at {self.actor_addr}.', flush=True)
    if self.mine:
      self.watch_servers()
    while not preempt.requested:
      self.check()
      if self.mine and not self.replay_proc and not self.actor_proc and all(
          p.exitcode == 0 for p in self.workers.values()):
        break
      time.sleep(0.5)

  def watch_servers(self, clients=None):
    """The watchdog stops the job once the replay server or the actor,
    where another command runs them, has been unreachable for
    run.server_timeout seconds (portal would wait for it forever, in any
    call). clients: this process's own, else new ones."""
    clients = clients or {}
    for role, name, addr in (('replay', 'replay server', self.replay_addr),
                             ('actor', 'actor', self.actor_addr)):
      if role not in self.roles:
        self._watched[name] = (
            clients.get(role) or remote.client(addr, f'Watch{role}'))

  def _start_actor(self):
    sizes = [len(g) for g in self.groups]
    self.actor_proc = self._process(
        remote.serve_actor, self.make_agent, self.actor_addr, sizes,
        self.args.actor_wait, name='actor')
    self.actor_seen = self._env_steps()
    self.actor_starts += 1

  def _env_steps(self):
    return sum(counter.value for counter in self.progress.values())

  def _process(self, fn, *args, name):
    proc = self.portal.Process(fn, *args, name=name)
    proc.start()
    return proc

  def _start_worker(self, index):
    args = self.args
    self.workers[index] = self._process(
        remote.env_worker, index, self.groups[index], self.make_env,
        self.actor_addr, self.replay_addr, bool(args.parallel_envs),
        int(args.env_max_restarts), self.progress[index],
        # Env 0 is worker 0's first: its video, as `train` records env 0.
        float(args.get('video_every', 0)) if index == 0 else 0.0,
        name=f'envs{index}')
    self.seen[index] = self.progress[index].value

  def _watchdog(self, grace=10.0):
    """Last resort for a command blocked where it cannot run check() (e.g.
    portal waiting to reconnect to a dead server): once the replay server
    has been gone for `grace` seconds, or a server of another command for
    run.server_timeout, without the job being closed, say so, kill the
    job's processes and exit with status 1. Checkpoints stay intact (they
    are written atomically). A dead actor is check()'s: it restarts it."""
    dead_since = None
    while not self.closed:
      time.sleep(1.0)
      now = time.time()
      message = self._unreachable(now)
      proc = self.replay_proc
      if proc is not None and proc.exitcode is not None:
        dead_since = dead_since or now
        if now - dead_since > grace:
          message = ('the replay server process exited; the job stops. The '
                     'last checkpoint and the written replay chunks are '
                     'kept: run the same command again to resume.')
      if message and not self.closed:
        print(f'Error: {message}', file=sys.stderr, flush=True)
        self.close()
        os._exit(1)

  def _unreachable(self, now):
    """A line naming a watched server gone for too long, or None."""
    for name, client in list(self._watched.items()):  # Grows elsewhere.
      if client.connected:
        self._lost.pop(name, None)
        continue
      since = self._lost.setdefault(name, now)
      if now - since > float(self.args.server_timeout):
        host, port = client.socket.addr
        return (f'the {name} at {host}:{port} has been unreachable for '
                f'{self.args.server_timeout:g} s (run.server_timeout); '
                'this command stops. The last checkpoint and the written '
                'replay chunks are kept: restart the job on every machine '
                'to resume.')
    return None

  def check(self, force=False):
    """Cheap enough to call often; looks at the processes twice a second."""
    now = time.time()
    if self.closed or (not force and now - self._last_check < 0.5):
      return
    self._last_check = now
    if self.replay_proc and self.replay_proc.exitcode is not None:
      raise ParallelError(
          f'The replay server process exited (exit code '
          f'{self.replay_proc.exitcode}); the job stops. The last checkpoint '
          'and the written replay chunks are kept: run the same command '
          'again to resume. Its output above shows the cause, if it failed '
          'rather than being killed.')
    if self.actor_proc and self.actor_proc.exitcode is not None:
      self._restart_actor()
    for index, proc in list(self.workers.items()):
      code = proc.exitcode
      if code is None or code == 0:  # Running, or done with the run.
        continue
      self.failures[index] = self._failed(
          f'env worker {index}', code, self.failures[index],
          self.progress[index].value > self.seen[index])
      self.restarts += 1
      _forget(proc)
      self._start_worker(index)

  def _restart_actor(self):
    self.actor_failures = self._failed(
        'the actor', self.actor_proc.exitcode, self.actor_failures,
        self._env_steps() > self.actor_seen)
    _forget(self.actor_proc)
    self._start_actor()

  def _failed(self, name, code, failures, progressed):
    """Counts a process's failure (in a row: reset by an env step since its
    start) and says it restarts; past run.env_max_restarts the job stops.
    Returns the new count."""
    failures = 1 if progressed else failures + 1
    limit = int(self.args.env_max_restarts)
    if limit and failures > limit:
      raise ParallelError(
          f'{name[0].upper()}{name[1:]} failed {failures} times in a row '
          f'without an env step in between (run.env_max_restarts is '
          f'{limit}); the job stops. See its error above.')
    print(f'Warning: restarting {name} (exit code {code}).',
          file=sys.stderr, flush=True)
    return failures

  def close(self):
    """Kills every process of the job and its subprocesses (SIGKILL: they
    ignore stop signals; the learner has saved what it needs)."""
    import psutil
    self.closed = True
    procs = [p for p in (*self.workers.values(), self.actor_proc,
                         self.replay_proc) if p is not None and p.started]
    victims = []
    for proc in procs:
      _forget(proc)
      if proc.exitcode is not None:
        continue
      try:
        parent = psutil.Process(proc.pid)
        victims += [parent, *parent.children(recursive=True)]
      except psutil.NoSuchProcess:
        pass
    for victim in victims:
      try:
        victim.kill()
      except psutil.NoSuchProcess:
        pass
    psutil.wait_procs(victims, timeout=5)
    for proc in procs:
      proc.join(1)


def _forget(proc):
  # Portal's exit hook would otherwise kill whatever later reuses the pid.
  atexit.unregister(proc.kill)


def _addr(value):
  if not value:
    import portal
    return f'localhost:{portal.free_port()}'
  return value


def lock_parts(args):
  """What this command holds of the logdir: None for the whole job, else its
  roles, each env worker on its own (commands on other machines run the
  others)."""
  roles, _, workers = layout(args)
  if roles == ROLES:
    return None
  return [r for r in roles if r != 'envs'] + [f'envs{i}' for i in workers]


def layout(args):
  """(roles of this command, env ids of every worker, worker ids of this
  command) from the run.* keys; ValueError naming the key on bad values.
  Every command of a job computes the same groups, so worker ids agree."""
  roles = str(args.parallel_roles)
  mine_roles = ROLES if roles == 'all' else tuple(
      r.strip() for r in roles.split(',') if r.strip())
  if set(mine_roles) - set(ROLES) or not mine_roles:
    raise ValueError(
        f"run.parallel_roles needs 'all' or some of {', '.join(ROLES)} "
        f'(comma-separated), got {roles!r}')
  if mine_roles != ROLES and not (args.replay_addr and args.actor_addr):
    raise ValueError(
        'run.parallel_roles other than all needs run.replay_addr and '
        'run.actor_addr, so the processes of all commands find each other')
  for key in ('replay_addr', 'actor_addr'):
    if args[key]:
      try:
        remote.parse_addr(args[key])
      except ValueError:
        raise ValueError(
            f"run.{key} needs 'host:port' or a port, got {args[key]!r}"
        ) from None
  count = max(1, min(int(args.env_workers), int(args.envs)))
  groups = [list(range(args.envs))[i::count] for i in range(count)]
  ids = str(args.env_worker_ids).strip()
  try:
    mine = [int(i) for i in ids.split(',')] if ids else list(range(count))
  except ValueError:
    mine = [-1]
  if not set(mine) <= set(range(count)):
    raise ValueError(
        f'run.env_worker_ids {ids!r} names workers outside 0..{count - 1} '
        f'(run.env_workers {count})')
  return mine_roles, groups, (mine if 'envs' in mine_roles else [])


# Config checks (dreamerv3/validate.py) of the parallel script's keys.
RANGES = ((r'run\.env_workers', 'int', 1, None),
          (r'run\.server_timeout', 'number', 1, None))


def check(config):
  if config.script != 'parallel':
    return None
  if config.run.deterministic:
    return ('run.deterministic cannot hold with script parallel: its '
            'processes interleave at the speed of each; use script train')
  try:
    layout(config.run)
  except ValueError as e:
    return str(e)
  return None


def check_processes(config, settings):
  if config.script == 'parallel':
    return (f'script parallel runs one learner; jax.distributed found '
            f'{settings.num_processes} processes ({settings.source}): use '
            'jax.distributed.mode off and one task')
  return None


class Rates:
  """What the parallel script's log lines add to the loop's (replay, actor
  and per-process rates and wait fractions between log calls)."""

  def __init__(self, job):
    self.job = job
    self.last = None
    self.workers = {}  # worker -> counters at the last call
    self.restarts = 0

  def __call__(self, updates, replay, actor):
    now = time.perf_counter()
    out = {}
    stats = replay.stats()
    out.update(stats['metrics'])
    out.update(stats['videos'])  # policy/<key>, as `train` logs them
    ask = lambda: actor.call('stats')
    out.update(remote.call(ask(), self.job.check, resend=ask, client=actor,
                           what='reply from the actor to stats'))
    dt = None
    if self.last:
      prev_time, prev_updates, prev_wait = self.last
      dt = max(now - prev_time, 1e-9)
      out['parallel/learner_ups'] = (updates - prev_updates) / dt
      out['parallel/learner_wait_frac'] = (replay.wait_time - prev_wait) / dt
    self.last = (now, updates, replay.wait_time)
    # Env workers, from the counters each sends with its inserts (one
    # insert behind; a restarted worker has a new pid and starts from 0).
    total = {'env_time': 0.0, 'actor_wait': 0.0, 'insert_wait': 0.0,
             'restarts': 0}
    for worker, new in stats['workers']:
      worker = int(worker)
      old = self.workers.get(worker)
      if not old or old['pid'] != new['pid']:
        old = {k: 0 for k in new}
      for key in total:
        total[key] += new[key] - old[key]
      if dt:
        out[f'parallel/worker{worker}_fps'] = (
            new['steps'] - old['steps']) / dt
      self.workers[worker] = new
    busy = total['env_time'] + total['insert_wait']
    if busy > 0:
      # Shares of the workers' loop time: stepping envs (the actor's
      # replies excluded), waiting for actions, waiting to insert.
      out['parallel/env_frac'] = (
          total['env_time'] - total['actor_wait']) / busy
      out['parallel/actor_wait_frac'] = total['actor_wait'] / busy
      out['parallel/insert_wait_frac'] = total['insert_wait'] / busy
    out['env/restarts'] = total['restarts']
    out['parallel/worker_restarts'] = self.job.restarts - self.restarts
    self.restarts = self.job.restarts
    out['parallel/actor_starts'] = self.job.actor_starts
    return out
