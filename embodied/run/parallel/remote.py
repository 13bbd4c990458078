"""The processes of the `parallel` run script and their RPC clients, on
portal: a replay server, an actor serving batched policy inference, and env
workers. The package (__init__.py) starts and supervises them and runs the learner.

Every server method returns within about WAIT seconds, also when it has to
hold its caller back (it then answers 'wait' and the caller asks again), so
that no server thread and no client is stuck on a peer that has died:
clients check the health of the job between tries (see call()).
"""

import os
import pickle
import sys
import threading
import time
import traceback

import numpy as np

from embodied.core.ratelimit import SamplesPerInsert
from . import transport

WAIT = 1.0  # Seconds a server method holds a caller before 'wait'.
STALL = 30.0  # Seconds without a reply before a repeatable call is resent.


class Finished(Exception):
  """The run has reached its step count: no more inserts or samples."""


def child_setup():
  """For the job's processes other than the learner. They ignore stop
  signals: SLURM signals the whole job, but only the learner decides when
  to stop (it saves first and then kills the others). And they exit when
  the learner is gone (even killed), so none is left behind."""
  import signal
  for name in ('SIGUSR1', 'SIGTERM'):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)
  threading.Thread(target=watch, daemon=True).start()


def parse_addr(addr):
  """'host:port' -> (host, port); a bare port means localhost."""
  host, _, port = str(addr).rpartition(':')
  return host or 'localhost', int(port)


def client(addr, name):
  """A portal client (one whose socket thread sleeps when idle, see
  transport.py); call methods as client.call('name', ...), since
  portal.Client has attributes of its own (e.g. stats)."""
  host, port = parse_addr(addr)
  return transport.client(f'{host}:{port}', name)


def server(addr, name, workers):
  import portal
  _, port = parse_addr(addr)
  # errors=False: a failing method answers its caller with the error
  # instead of closing the server; the caller raises it.
  return portal.Server(port, name, workers=workers, errors=False,
                       logging=False)


def call(future, check=None, timeout=None, what='reply', resend=None,
         client=None, stall=STALL):
  """The future's result, waiting in short steps that run check() (which
  raises if the job cannot go on). With resend (a function that makes the
  same request again, which must be safe to repeat), a request without a
  reply after `stall` seconds is made again: a request or reply lost in
  transit then costs that much time instead of a hung job."""
  deadline = timeout and time.time() + timeout
  asked = time.time()
  while True:
    try:
      return future.result(timeout=0.5)
    except TimeoutError:
      if check:
        check()
      if deadline and time.time() > deadline:
        raise TimeoutError(f'No {what} within {timeout} s.') from None
      if resend and time.time() - asked > stall:
        print(f'Warning: no {what} after {stall:g} s; asking again.',
              file=sys.stderr, flush=True)
        if client is not None:  # Frees its slot of portal's maxinflight.
          client.futures.pop(future.sendargs[0], None)
        future, asked = resend(), time.time()


def light(tran):
  """What the learner sees of every env step (episode statistics and the
  agent's host state): the scalar entries (reward, is_first, is_last,
  is_terminal, ...) and the log/ entries."""
  return {k: v for k, v in tran.items()
          if k.startswith('log/') or np.ndim(v) == 0}


# Replay server.

class ReplayServer:
  """Holds the Replay and the SamplesPerInsert limiter. Env workers insert
  one lockstep step of their envs per call; the learner samples, writes
  per-step outputs back and takes coordinated snapshots.

  Invariants:
  - Steps are added only after open() (the learner calls it once it has
    restored the checkpoint, so no step is added to a buffer that a load
    would then replace) and only while inserted < limiter.limit (the run's
    steps).
  - Replay contents, the limiter counters and the queue of light steps for
    the learner change together under the limiter's lock; snapshot() takes
    all three at one moment, so a checkpoint's replay, counters and host
    state agree (a resume neither loses nor duplicates steps before it).
  """

  def __init__(self, replay, limiter):
    self.replay = replay
    self.limiter = limiter
    self.opened = threading.Event()
    self.events = []  # (env id, step index, light tran), drained by learner.
    self.workers = {}  # worker -> its latest cumulative counters.
    self.added = {}  # worker -> (pid, seq) of its latest added step.
    self.writeback = [0.0, 0]  # seconds, calls
    self.videos = {}  # Policy videos from env worker 0, until stats().

  def info(self):
    return {'length': self.replay.length, 'chunksize': self.replay.chunksize}

  def open(self):
    self.opened.set()
    return True

  def add(self, worker, seq, trans, counters):
    """trans: {'__env__': env ids, key: values stacked over those envs}, one
    lockstep step of the worker's envs;
    seq: the step's number in this worker process (a repeated request with
    a seq already added is answered 'ok' without adding it again).
    Returns 'ok', 'wait' (try again) or 'done' (the run has its steps)."""
    # Numbers arrive as NumPy scalars (portal's packing).
    worker, seq = int(worker), int(seq)
    counters = {k: v.item() if hasattr(v, 'item') else v
                for k, v in counters.items()}
    self.workers[worker] = counters
    # Stacked per key (few buffers for portal, see sample()).
    envs = [int(env) for env in trans.pop('__env__')]
    trans = [(env, {k: v[i] for k, v in trans.items()})
             for i, env in enumerate(envs)]
    if not self.opened.wait(WAIT):
      return 'wait'
    key = (counters['pid'], seq)
    if self.added.get(worker, (None, -1))[0] == key[0] and \
        self.added[worker][1] >= seq:
      return 'ok'

    def insert():
      # Counted already: the k-th step is env step inserted - n + k + 1.
      base = self.limiter.inserted - len(trans)
      for k, (env, tran) in enumerate(trans):
        self.replay.add(tran, env)
        self.events.append((env, base + k + 1, light(tran)))
      self.added[worker] = key
    granted, _ = self.limiter.insert(len(trans), WAIT, insert)
    if granted:
      return 'ok'
    # The limiter refuses inserts past the run's steps for good.
    return 'done' if self.limiter.inserted >= self.limiter.limit else 'wait'

  def sample(self, batch_size, trained, commit):
    """{'data': batch or None ('wait'), 'step': env steps, 'events': light
    steps since the last call}. A committed batch counts batch_size *
    trained steps in the limiter (trained: the steps of a sequence that
    the train step learns from). Uncommitted samples (reports) skip the
    limiter."""
    data, batch_size, commit = None, int(batch_size), bool(commit)
    if not commit:
      data = self.replay.sample(batch_size, commit=False)
    elif not len(self.replay.sampler):
      # Past the prefill but no env has a whole sequence yet (more envs
      # than the prefill has sequences): wait for more steps.
      time.sleep(0.1)
    else:
      _, data = self.limiter.sample(
          batch_size * int(trained), WAIT,
          lambda: self.replay.sample(batch_size, commit=True))
    counters, events = self.limiter.snapshot(self._drain)
    # One bytes leaf: portal sends every leaf as its own buffer of one
    # writev() call, which fails (silently, retried forever) past the
    # system's limit of 1024 buffers.
    return {'data': data, 'step': counters['inserted'],
            'events': pickle.dumps(events)}

  def _drain(self):
    events, self.events = self.events, []
    return events

  def update(self, stepid, values):
    start = time.perf_counter()
    self.replay.update(stepid, values)
    self._time_writeback(start)
    return True

  def prioritize(self, stepid, values):
    start = time.perf_counter()
    self.replay.prioritize(stepid, values)
    self._time_writeback(start)
    return True

  def item_ids(self):
    return self.replay.item_ids()

  def gather(self, itemids):
    return self.replay.gather(itemids)

  def snapshot(self):
    """Pickled {'replay', 'limiter', 'step', 'events'} taken at one moment
    (see the class doc)."""
    def take():
      events, self.events = self.events, []
      return self.replay.save(), events
    limiter, (replay, events) = self.limiter.snapshot(take)
    return pickle.dumps({'replay': replay, 'limiter': limiter,
                         'step': limiter['inserted'], 'events': events})

  def restore(self, key, blob):
    if self.opened.is_set():
      raise RuntimeError('Replay server is open already; cannot load now.')
    data = pickle.loads(blob)
    if key == 'replay':
      self.replay.load(data)
    else:
      self.limiter.load(data)
    return True

  def committed(self):
    self.replay.committed()
    return True

  def stats(self):
    # Under the limiter's lock, so replay/size and replay/inserted agree.
    _, out = self.limiter.snapshot(self._stats)
    seconds, calls = self.writeback
    if calls:
      out['replay/writeback_ms'] = 1000 * seconds / calls
    self.writeback = [0.0, 0]
    videos, self.videos = self.videos, {}
    # A list: portal's packing takes only string keys.
    return {'metrics': out, 'workers': sorted(self.workers.items()),
            'videos': videos}

  def video(self, videos):
    """A rendered policy episode from env worker 0, for the learner's log."""
    self.videos.update(videos)
    return True

  def _stats(self):
    out = {f'replay/{k}': v for k, v in self.limiter.stats().items()}
    out.update(self.replay.stats())
    return out

  def _time_writeback(self, start):
    self.writeback[0] += time.perf_counter() - start
    self.writeback[1] += 1


def serve_replay(make_replay, addr, ratio, tolerance, min_steps, steps,
                 workers):
  """Process entry: the replay server at addr until killed."""
  child_setup()
  replay = make_replay('replay')
  limiter = SamplesPerInsert(ratio, tolerance, min_steps, limit=steps)
  impl = ReplayServer(replay, limiter)
  srv = server(addr, 'Replay', 4)
  # Env workers block in add(), each on its own thread; the learner's
  # samples and write-backs get theirs, so neither waits behind the other.
  srv.bind('add', impl.add, workers=workers)
  srv.bind('sample', impl.sample, workers=2)
  srv.bind('update', impl.update, workers=1)
  srv.bind('prioritize', impl.prioritize, workers=1)
  for name in ('info', 'open', 'item_ids', 'gather', 'snapshot', 'restore',
               'committed', 'stats', 'video'):
    srv.bind(name, getattr(impl, name))
  srv.start(block=True)


class ReplayClient:
  """The learner's handle of the replay server. Offers what common.Learner
  and PriorityRefresh use of a Replay (sample, update, prioritize,
  item_ids, gather, length, chunksize) plus the coordinated snapshot.
  sample(commit=True) prefetches the next batch while the caller trains.

  `step` is the server's count of env steps, as of the latest reply;
  `events` collects the light steps (see light()) for the learner."""

  def __init__(self, addr, batch_size, trained, check, steps):
    self.client = client(addr, 'ReplayClient')
    self.batch_size, self.trained = batch_size, trained
    self.check = check
    self.steps = int(steps)
    self.step = 0
    self.events = []
    self.wait_time = 0.0  # Seconds sample() blocked the caller.
    self._next = None  # The prefetched sample's future,
    self._ready = []   # or its batch, taken early (see snapshot()).
    self._snapshot = None
    info = self._call('info')
    self.length, self.chunksize = info['length'], info['chunksize']

  def _call(self, method, *args, repeatable=True):
    ask = lambda: self.client.call(method, *args)
    return call(ask(), self.check,
                what=f'reply from the replay server to {method}',
                resend=ask if repeatable else None, client=self.client)

  def _take(self, reply):
    self.step = int(reply['step'])
    self.events += pickle.loads(bytes(reply['events']))
    return reply['data']

  def sample(self, batch_size, commit=True):
    if not commit or batch_size != self.batch_size:
      return self._take(self._call('sample', batch_size, self.trained, False))
    start = time.perf_counter()
    try:
      while True:
        data = self._ready.pop() if self._ready else self._take_next()
        if data is not None:
          break
        if self.step >= self.steps:
          raise Finished()
      self._next = self.client.call('sample', batch_size, self.trained, True)
      return data
    finally:
      self.wait_time += time.perf_counter() - start

  def _take_next(self):
    ask = lambda: self.client.call(
        'sample', self.batch_size, self.trained, True)
    future = self._next or ask()
    self._next = None
    # A repeated sample at most counts one unused batch.
    return self._take(call(
        future, self.check, what='reply from the replay server to sample',
        resend=ask, client=self.client))

  def update(self, stepid, values):
    self._send('update', stepid, values)

  def prioritize(self, stepid, values):
    self._send('prioritize', stepid, values)

  def _send(self, method, *args):
    """A call not waited for (the next train step does not need it; its
    error surfaces at a later call). portal's client would block without
    a health check once maxinflight calls are unanswered, so wait here."""
    while len(self.client.futures) >= self.client.maxinflight - 2:
      time.sleep(0.01)
      self.check()
    self.client.call(method, *args)

  def item_ids(self):
    return self._call('item_ids')

  def gather(self, itemids):
    return self._call('gather', np.asarray(itemids, np.int64))

  def open(self):
    return self._call('open')

  def stats(self):
    return self._call('stats')

  def snapshot(self):
    """Takes the coordinated snapshot; returns its env step. Its parts are
    then saved through part('replay') and part('limiter')."""
    if self._next is not None:
      # The prefetched sample's reply carries light steps the server handed
      # out before this snapshot: feed them with it, not after the save.
      self._ready.append(self._take_next())
    data = pickle.loads(self._call('snapshot', repeatable=False))
    self.step = int(data['step'])
    self.events += data['events']
    self._snapshot = data
    return self.step

  def part(self, key):
    return _Part(self, key)

  def close(self):
    self.client.close(timeout=1)


class _Part:
  """A checkpointed object standing for the server's replay or limiter:
  save() returns the part of the last snapshot, load() sends the data."""

  def __init__(self, owner, key):
    self.owner, self.key = owner, key

  def save(self):
    if self.owner._snapshot is None:
      raise RuntimeError('ReplayClient.snapshot() must precede a save.')
    return self.owner._snapshot[self.key]

  def load(self, data):
    self.owner._call('restore', self.key, pickle.dumps(data),
                     repeatable=False)
    if self.key == 'limiter':
      self.owner.step = int(data['inserted'])

  def committed(self):
    if self.key == 'replay':
      self.owner._snapshot = None
      self.owner._call('committed', repeatable=False)


# Actor.

class ActorServer:
  """Batched policy inference for every env of every worker. Keeps the
  policy carry of all envs on the host, one row per env (envs of worker w
  are rows offsets[w] .. offsets[w] + sizes[w] - 1).

  A round starts with the first request and runs once every worker has
  asked or `wait` seconds have passed; it always computes the full batch
  (rows of workers that did not ask get their last obs), so the policy is
  compiled once, and it keeps the new carry of the rows that asked only.
  act() blocks until params() has delivered parameters once."""

  def __init__(self, agent, sizes, wait):
    import jax
    self.jax = jax
    self.agent = agent
    self.sizes = list(sizes)
    self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
    self.total = sum(self.sizes)
    self.wait = wait
    self.carry = jax.device_get(agent.init_policy(self.total))
    self.obs = None
    self.has_params = threading.Event()
    self.version = 0
    self.lock = threading.Lock()  # Parameters vs. inference.
    self.cond = threading.Condition()
    self.pending = {}  # worker -> [obs, result slot, done event, key]
    self.entries = {}  # worker -> its latest entry (answers repeats)
    self.running = True
    self.counts = {'rounds': 0, 'envs': 0, 'busy': 0.0, 'start':
                   time.perf_counter(), 'pending': 0}
    self.thread = threading.Thread(target=self._loop, daemon=True)
    self.thread.start()

  def params(self, blob):
    """blob: the pickled agent.save() (one buffer for portal, however many
    arrays the state has; see ReplayServer.sample)."""
    state = pickle.loads(bytes(blob))
    with self.lock:
      self.agent.load(state)
      self.version += 1
    self.has_params.set()
    return self.version

  def act(self, worker, key, obs):
    """key: (pid, step number) of the request in its worker process; a
    repeated request gets the same reply, without advancing the carry
    again. None: no parameters yet, ask again."""
    if not self.has_params.wait(WAIT):
      return None
    worker, key = int(worker), tuple(int(k) for k in key)
    with self.cond:
      entry = self.entries.get(worker)
      if entry is None or entry[3] != key:
        entry = [obs, None, threading.Event(), key]
        self.entries[worker] = entry
        self.pending[worker] = entry
        self.cond.notify_all()
    while not entry[2].wait(WAIT):
      if not self.running:
        raise RuntimeError('Actor stopped.')
    if isinstance(entry[1], Exception):
      raise entry[1]
    return entry[1]

  def stats(self):
    c = self.counts
    now = time.perf_counter()
    dt = max(now - c['start'], 1e-9)
    out = {'parallel/actor_busy_frac': c['busy'] / dt,
           'parallel/actor_params_version': self.version}
    if c['rounds']:
      out['parallel/actor_batch'] = c['envs'] / c['rounds']
      out['parallel/actor_queue'] = c['pending'] / c['rounds']
      out['parallel/actor_fps'] = c['envs'] / dt
    self.counts = {'rounds': 0, 'envs': 0, 'busy': 0.0, 'start': now,
                   'pending': 0}
    return out

  def _loop(self):
    while self.running:
      with self.cond:
        if not self.pending and not self.cond.wait(0.5):
          continue
        deadline = time.perf_counter() + self.wait
        while len(self.pending) < len(self.sizes):
          left = deadline - time.perf_counter()
          if left <= 0:
            break
          self.cond.wait(left)
        batch, self.pending = self.pending, {}
      if not batch:
        continue
      try:
        self._round(batch)
      except Exception as e:
        traceback.print_exc()
        for entry in batch.values():
          entry[1] = e
          entry[2].set()

  def _round(self, batch):
    start = time.perf_counter()
    rows = {}
    for worker, (obs, _, _, _) in batch.items():
      if worker >= len(self.sizes):
        raise ValueError(f'Unknown env worker {worker}.')
      if self.obs is None:
        self.obs = {k: np.zeros((self.total, *np.shape(v)[1:]),
                                np.asarray(v).dtype) for k, v in obs.items()}
      lo = self.offsets[worker]
      rows[worker] = slice(lo, lo + self.sizes[worker])
      for key, value in obs.items():
        self.obs[key][rows[worker]] = value
    with self.lock:
      carry, act, outs = self.agent.policy(self.carry, self.obs, mode='train')
    carry = self.jax.device_get(carry)
    mask = np.zeros(self.total, bool)
    for r in rows.values():
      mask[r] = True
    self.carry = self.jax.tree.map(
        lambda new, old: np.where(
            mask.reshape((-1,) + (1,) * (np.ndim(new) - 1)), new, old),
        carry, self.carry)
    for worker, entry in batch.items():
      r = rows[worker]
      entry[1] = {'act': {k: v[r] for k, v in act.items()},
                  'outs': {k: v[r] for k, v in outs.items()}}
      entry[2].set()
    c = self.counts
    c['rounds'] += 1
    c['envs'] += sum(self.sizes[w] for w in batch)
    c['pending'] += len(batch)
    c['busy'] += time.perf_counter() - start


def serve_actor(make_agent, addr, sizes, wait):
  """Process entry: the actor at addr until killed (make_agent sets JAX up
  as the learner's process)."""
  child_setup()
  # On a GPU the learner holds most of the memory already.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  agent = make_agent()
  impl = ActorServer(agent, sizes, wait)
  srv = server(addr, 'Actor', 2)
  srv.bind('act', impl.act, workers=len(sizes) + 1)
  srv.bind('params', impl.params)
  srv.bind('stats', impl.stats)
  srv.start(block=True)


# Env workers.

class _Videos:
  """What PolicyVideo.log() logs to: sends it to the replay server."""

  def __init__(self, replay):
    self.replay = replay

  def add(self, videos):
    ask = lambda: self.replay.call('video', videos)
    call(ask(), what='reply from the replay server to video', resend=ask,
         client=self.replay)


def env_worker(index, env_ids, make_env, actor_addr, replay_addr, parallel,
               max_restarts, progress, video_every=0):
  """Process entry: steps the envs env_ids with the existing Driver (each
  env in its own subprocess with parallel=True, i.e. run.parallel_envs),
  asks the actor for actions and inserts every lockstep step into replay.
  progress: a shared counter of this worker's env steps (the supervisor
  reads it). video_every: seconds between policy videos of this worker's
  first env (as `train` records env 0), sent rendered to the replay server
  for the learner's log. Returns when the replay server says the run is
  done."""
  import functools
  from embodied.core import Driver
  from ..common import PolicyVideo
  child_setup()
  actor = client(actor_addr, f'Actor{index}')
  replay = client(replay_addr, f'Replay{index}')
  fns = [functools.partial(make_env, i) for i in env_ids]
  driver = Driver(fns, parallel=parallel, max_restarts=max_restarts)
  counters = {'pid': os.getpid(), 'steps': 0, 'env_time': 0.0,
              'actor_wait': 0.0, 'insert_wait': 0.0, 'restarts': 0}
  trans = []
  driver.on_step(lambda tran, i: trans.append((env_ids[i], tran)))
  video = PolicyVideo(video_every)
  driver.on_step(video)

  seq = [0]  # Lockstep steps of this process, numbering its requests.

  def policy(carry, obs):
    start = time.perf_counter()
    obs = {k: v for k, v in obs.items() if not k.startswith('log/')}
    ask = lambda: actor.call('act', index, (os.getpid(), seq[0]), obs)
    while True:
      reply = call(ask(), what='reply from the actor', resend=ask,
                   client=actor)
      if reply is not None:
        break
    counters['actor_wait'] += time.perf_counter() - start
    return carry, reply['act'], reply['outs']

  driver.reset(lambda n: None)
  print(f'Env worker {index} started (pid {os.getpid()}, envs '
        f'{", ".join(map(str, env_ids))}).', flush=True)
  try:
    while True:
      start = time.perf_counter()
      driver(policy, steps=len(env_ids))
      counters['env_time'] += time.perf_counter() - start
      counters['restarts'] = driver.restarts
      start = time.perf_counter()
      stacked = {k: np.stack([t[k] for _, t in trans]) for k in trans[0][1]}
      stacked['__env__'] = np.array([env for env, _ in trans], np.int64)
      ask = lambda: replay.call(
          'add', index, seq[0], stacked, dict(counters))
      while True:
        status = call(ask(), what='reply from the replay server to add',
                      resend=ask, client=replay)
        if status != 'wait':
          break
      seq[0] += 1
      counters['insert_wait'] += time.perf_counter() - start
      video.log(_Videos(replay))
      if status == 'done':
        break
      counters['steps'] += len(trans)
      with progress.get_lock():
        progress.value += len(trans)
      trans.clear()
  finally:
    driver.close()
  print(f'Env worker {index} done.', file=sys.stderr, flush=True)
  return 0
