"""The parallel script: its samples-per-insert limiter, and real runs of
dreamerv3/main.py --script parallel (debug config) in subprocesses: a run
during which an env worker is killed, then a resume of its logdir."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from embodied.core.ratelimit import SamplesPerInsert

ROOT = pathlib.Path(__file__).resolve().parent.parent


# The limiter.

def test_limiter_hand_computed_sequence():
  # ratio 2, tolerance 4, prefill 3: d = S - 2 * max(0, I - 3).
  lim = SamplesPerInsert(ratio=2, tolerance=4, min_steps=3)
  assert not lim.can_sample(1)          # Prefill.
  assert lim.insert(2, timeout=0)[0]    # I=2, still prefill.
  assert lim.insert(2, timeout=0)[0]    # I=4 (granted: I was < 3), d=-2.
  # Next insert of 2: 2 * (6 - 3) - 0 = 6 > 4, refused.
  assert not lim.insert(2, timeout=0)[0]
  assert lim.insert(1, timeout=0)[0]    # 2 * (5 - 3) = 4 <= 4: I=5, d=-4.
  # Sample 8: 8 - 4 = 4 <= 4 granted; then sample 1: 9 - 4 = 5 > 4 refused.
  assert lim.sample(8, timeout=0)[0]
  assert not lim.sample(1, timeout=0)[0]
  assert lim.save() == {'inserted': 5, 'sampled': 8}
  # Insert 4: 2 * (9 - 3) - 8 = 4 <= 4 granted; d = 8 - 12 = -4.
  assert lim.insert(4, timeout=0)[0]
  assert not lim.insert(1, timeout=0)[0]
  stats = lim.stats()
  assert stats['inserted'] == 9 and stats['sampled'] == 8
  assert stats['deficit'] == -4
  # Loading restores the counters (the checkpointed state).
  other = SamplesPerInsert(2, 4, 3)
  other.load(lim.save())
  assert other.save() == {'inserted': 9, 'sampled': 8}
  assert not other.insert(1, timeout=0)[0]
  assert other.sample(8, timeout=0)[0]


def test_limiter_minimum_tolerance_never_stalls():
  ratio, n, b = 16.0, 2, 36
  tol = SamplesPerInsert.minimum(ratio, n, b)
  lim = SamplesPerInsert(ratio, tol, min_steps=36)
  for _ in range(500):
    assert lim.can_insert(n) or lim.can_sample(b)
    if lim.can_sample(b):
      lim.sample(b, timeout=0)
    else:
      lim.insert(n, timeout=0)
  assert lim.sampled > 0 and lim.inserted > 36


def test_limiter_blocks_threads_within_tolerance():
  ratio, tol, batch = 4.0, 20.0, 8
  lim = SamplesPerInsert(ratio, tol, min_steps=10)
  seen = []  # Deficits right after every granted call.
  lock = threading.Lock()

  def record():
    d = lim.sampled - ratio * max(0, lim.inserted - lim.min_steps)
    with lock:
      seen.append((lim.inserted, d))

  def actor():
    for _ in range(200):
      assert lim.insert(1, timeout=10, then=record)[0]

  def learner():
    # Stops once 200 inserts are used up to within the tolerance.
    while lim.sample(batch, timeout=1.0, then=record)[0]:
      pass

  threads = [threading.Thread(target=actor),
             threading.Thread(target=learner)]
  for t in threads:
    t.start()
  threads[0].join(30)
  threads[1].join(30)
  assert not any(t.is_alive() for t in threads)
  assert lim.inserted == 200
  # Past the prefill the deficit never leaves [-tol, tol].
  assert all(-tol <= d <= tol for i, d in seen if i > lim.min_steps)
  # The learner got as far as the tolerance allows: one more batch would
  # put it more than tol ahead of ratio * (200 - 10) = 760.
  assert 760 + tol - batch < lim.sampled <= 760 + tol
  # A blocked sample waits and then gives up after its timeout.
  start = time.time()
  assert not lim.sample(batch, timeout=0.3)[0]
  assert time.time() - start >= 0.25


def test_limiter_blocked_insert_released_by_sample():
  lim = SamplesPerInsert(ratio=1, tolerance=5, min_steps=0)
  assert lim.insert(5, timeout=0)[0]  # d = -5.
  result = {}
  waiter = threading.Thread(
      target=lambda: result.setdefault('ok', lim.insert(1, timeout=10)[0]))
  waiter.start()
  time.sleep(0.3)
  assert waiter.is_alive()  # 1 * 6 - 0 > 5: blocked.
  assert lim.sample(3, timeout=0)[0]  # 3 - 5 <= 5; wakes the waiter.
  waiter.join(5)
  assert result == {'ok': True} and lim.save() == {
      'inserted': 6, 'sampled': 3}
  lim.close()
  start = time.time()
  assert not lim.sample(100, timeout=5)[0]  # Closed: returns at once.
  assert time.time() - start < 1


# The replay server, in this process.

def test_replay_server_many_events_repeats_and_counts():
  import pickle
  import numpy as np
  import portal
  from embodied.core import Replay
  from embodied.run.parallel import remote
  replay = Replay(length=3, capacity=1000, chunksize=16)
  limiter = SamplesPerInsert(1.0, 1000, min_steps=0, limit=10 ** 6)
  impl = remote.ReplayServer(replay, limiter)
  addr = f'localhost:{portal.free_port()}'
  srv = remote.server(addr, 'TestReplay', 2)
  for name in ('add', 'sample', 'open', 'stats'):
    srv.bind(name, getattr(impl, name))
  srv.start(block=False)
  client = remote.client(addr, 'TestClient')
  try:
    counters = {'pid': 1, 'steps': 0, 'env_time': 0.0, 'actor_wait': 0.0,
                'insert_wait': 0.0, 'restarts': 0}
    step = lambda seq: {
        '__env__': np.array([0, 1]), 'obs': np.full((2, 3), seq, np.float32),
        'reward': np.ones(2, np.float32), 'is_first': np.zeros(2, bool),
        'is_last': np.zeros(2, bool), 'is_terminal': np.zeros(2, bool)}
    assert client.call('open').result(timeout=10)
    for seq in range(300):
      reply = client.call('add', 0, seq, step(seq), counters)
      assert reply.result(timeout=10) == 'ok'
    # A repeated request (same pid and step) adds nothing.
    assert client.call('add', 0, 299, step(299), counters).result(
        timeout=10) == 'ok'
    # 600 light steps in one reply: more than portal's 1024 buffers if
    # they travelled as separate leaves.
    reply = client.call('sample', 4, 3, True).result(timeout=10)
    assert reply['data'] is not None and reply['step'] == 600
    events = pickle.loads(bytes(reply['events']))
    assert len(events) == 600 and [e[1] for e in events] == list(
        range(1, 601))
    stats = client.call('stats').result(timeout=10)['metrics']
    assert stats['replay/size'] == 600 and stats['replay/inserted'] == 600
    assert stats['replay/sampled'] == 12
  finally:
    client.close()
    srv.close()


# Real runs.

BASE = ['--configs', 'debug', '--task', 'dummy_vector', '--script',
        'parallel']


@pytest.fixture(scope='module')
def env():
  env = dict(os.environ)
  env['PYTHONUNBUFFERED'] = '1'
  return env


def command(env, logdir, *args):
  # The default JAX cache (jax.cache_dir) persists across test sessions, so
  # only the first session compiles the learner's and the actor's programs.
  return [sys.executable, 'dreamerv3/main.py', *BASE, '--logdir',
          str(logdir), *args]


def ckpt_step(logdir):
  latest = pathlib.Path(logdir) / 'ckpt' / 'latest'
  if not latest.exists():
    return None
  return int(latest.read_text().strip().rsplit('-', 1)[1])


def jsonl(path):
  import json
  return [json.loads(l) for l in pathlib.Path(path).read_text().splitlines()
          if l.strip()]


@pytest.fixture(scope='module')
def first(env, tmp_path_factory):
  """A run of 200 steps during which env worker 0 is killed once."""
  logdir = tmp_path_factory.mktemp('parallel') / 'run'
  out = logdir.parent / 'out.txt'
  with open(out, 'w') as log:
    proc = subprocess.Popen(
        command(env, logdir, '--run.steps', '200'), cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT)
    killed = None
    try:
      deadline = time.time() + 240
      while killed is None:
        text = out.read_text()
        match = re.search(r'Env worker 0 started \(pid (\d+)', text)
        if match and 'Start training' in text and 'replay' in text.split(
            'Start training', 1)[1]:
          killed = int(match.group(1))
          os.kill(killed, signal.SIGKILL)
        assert proc.poll() is None, text[-3000:]
        assert time.time() < deadline, text[-3000:]
        time.sleep(0.2)
      proc.wait(timeout=240)
    finally:
      if proc.poll() is None:
        proc.kill()
  return dict(logdir=logdir, proc=proc, text=out.read_text(), killed=killed)


def test_parallel_run_writes_scores_and_checkpoint(first):
  logdir, text = first['logdir'], first['text']
  assert first['proc'].returncode == 0, text[-3000:]
  assert 'Start training at step 0 ' in text
  assert ckpt_step(logdir) == 200
  folder = logdir / 'ckpt' / (logdir / 'ckpt' / 'latest').read_text().strip()
  for key in ('agent', 'step', 'replay', 'limiter', 'done'):
    assert list(folder.glob(f'{key}*')), key
  scores = jsonl(logdir / 'scores.jsonl')
  assert scores and {s['episode/length'] for s in scores} == {20.0}
  metrics = jsonl(logdir / 'metrics.jsonl')
  keys = set().union(*metrics)
  assert {'train/loss/rec', 'fps/env', 'fps/train', 'replay/size',
          'replay/insert_wait', 'parallel/learner_wait_frac',
          'parallel/actor_wait_frac', 'parallel/actor_batch'} <= keys
  # Every env step is one replay step (capacity 1e4, nothing evicted).
  last = [m for m in metrics if 'replay/size' in m][-1]
  assert last['replay/size'] == 200 and last['replay/inserted'] == 200


def test_killed_env_worker_is_restarted(first):
  text = first['text']
  assert first['killed']
  assert 'Warning: restarting env worker 0' in text, text[-3000:]
  starts = re.findall(r'Env worker 0 started \(pid (\d+)', text)
  assert len(starts) == 2 and int(starts[0]) == first['killed']
  assert int(starts[1]) != first['killed']


@pytest.fixture(scope='module')
def resumed(env, first):
  logdir = first['logdir']
  size = (logdir / 'metrics.jsonl').stat().st_size
  proc = subprocess.run(
      command(env, logdir, '--run.steps', '260'), cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  with open(logdir / 'metrics.jsonl') as f:
    f.seek(size)
    import json
    new = [json.loads(l) for l in f.read().splitlines() if l.strip()]
  return dict(proc=proc, logdir=logdir, metrics=new)


def test_resume_continues_without_duplicates(resumed):
  proc, logdir = resumed['proc'], resumed['logdir']
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'Loaded checkpoint' in proc.stdout
  assert 'Start training at step 200 ' in proc.stdout
  assert ckpt_step(logdir) == 260
  sizes = [(m['replay/inserted'], m['replay/size'])
           for m in resumed['metrics'] if 'replay/size' in m]
  assert sizes, resumed['metrics']
  # Replay holds exactly one step per counted env step: the 200 restored
  # ones (none lost, none added twice) plus the new ones.
  assert all(size == inserted for inserted, size in sizes), sizes
  assert sizes[-1] == (260, 260)


def cpu_seconds(pid):
  """User + system CPU seconds of a process, from /proc (Linux)."""
  fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1]
  fields = fields.split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def descendants(pid):
  out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(pid)],
                       capture_output=True, text=True).stdout.split()
  return [p for c in map(int, out) for p in [c, *descendants(c)]]


@pytest.mark.slow  # A parallel job of its own: about a minute on 2 cores.
def test_idle_job_sleeps_and_a_killed_actor_is_restarted(env, tmp_path):
  """The learner stopped (SIGSTOP): env workers wait on replay inserts and
  the servers on requests. Env workers (pure clients) must then use less
  than 5% of a core (CPU time over 5 s; before transport.py each spun at
  ~0.6), the servers less than 0.3: portal's server loop polls its queues
  with 0.1 ms timeouts by design, 0.07-0.2 of a core here. Then the actor
  is killed: the job restarts it and goes on stepping envs, and a stop
  signal still saves and exits as usual. Policy videos of env 0 reach the
  learner's logdir."""
  logdir = tmp_path / 'run'
  out = tmp_path / 'out.txt'
  with open(out, 'w') as log:
    proc = subprocess.Popen(
        command(env, logdir, '--run.steps', '1e6', '--run.log_every', '1',
                # Images, for the policy video of env 0; an extension
                # with host state (the intrinsic reward schedule).
                '--task', 'dummy_disc', '--run.video_every', '1',
                '--agent.use_intrinsic', 'True'),
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  pids = []

  def wait_for(condition, seconds=300):
    deadline = time.time() + seconds
    while not condition():
      assert proc.poll() is None, out.read_text()[-3000:]
      assert time.time() < deadline, out.read_text()[-3000:]
      time.sleep(0.5)

  def metrics():
    path = logdir / 'metrics.jsonl'
    return jsonl(path) if path.exists() else []

  try:
    wait_for(lambda: any('train/loss/rec' in m for m in metrics()))
    proc.send_signal(signal.SIGSTOP)
    time.sleep(3)  # Workers fill replay up to the train ratio, then wait.
    pids = [pid for pid in descendants(proc.pid) if b'resource_tracker'
            not in pathlib.Path(f'/proc/{pid}/cmdline').read_bytes()]
    text = out.read_text()
    workers = {int(p) for p in re.findall(
        r'Env worker \d+ started \(pid (\d+)', text)}
    actor = int(re.search(r'actor at \S+ \(pid (\d+)\)', text).group(1))
    before = {pid: cpu_seconds(pid) for pid in pids}
    start = time.time()
    time.sleep(5)
    used = {pid: (cpu_seconds(pid) - before[pid]) / (time.time() - start)
            for pid in pids}
    proc.send_signal(signal.SIGCONT)
    assert len(workers) == 2 and workers <= set(used), (workers, used)
    assert len(used) == 4 and actor in used, used  # + the replay server
    assert max(used.values()) < 0.3, used
    assert max(used[pid] for pid in workers) < 0.05, used

    os.kill(actor, signal.SIGKILL)
    wait_for(lambda: 'Warning: restarting the actor' in out.read_text())
    # Env steps continue with the new actor (it got the parameters).
    wait_for(lambda: any(m.get('parallel/actor_starts') == 2 and
                         m.get('fps/env', 0) > 0 for m in metrics()))
    wait_for(lambda: list((logdir / 'videos').glob('policy-image-*.mp4')))
    proc.send_signal(signal.SIGUSR1)
    proc.wait(timeout=120)
  finally:
    for pid in [proc.pid, *pids]:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    proc.wait()
  text = out.read_text()
  assert proc.returncode == 3, text[-3000:]
  assert ckpt_step(logdir) and 'Traceback' not in text, text[-3000:]
  # Env 0's policy episodes, recorded by its worker, logged by the learner.
  assert list((logdir / 'videos').glob('policy-image-*.mp4')), text[-3000:]
  # The schedule's host state counted every env step of the checkpoint.
  import pickle
  folder = logdir / 'ckpt' / (logdir / 'ckpt' / 'latest').read_text().strip()
  host = pickle.loads((folder / 'host.pkl').read_bytes())
  assert host['intrinsic']['steps'] == ckpt_step(logdir), host


@pytest.mark.slow  # Two commands of one job: about a minute on 2 cores.
def test_learner_stops_when_the_servers_of_another_command_are_gone(
    env, tmp_path):
  """A job split over two commands (as over two machines): servers and
  env workers in one, the learner in the other. Killing the first leaves
  the learner's servers unreachable; it stops after run.server_timeout with
  one line naming the server, instead of waiting forever."""
  import portal
  addrs = [f'localhost:{portal.free_port()}' for _ in range(2)]
  shared = ['--run.replay_addr', addrs[0], '--run.actor_addr', addrs[1],
            '--run.steps', '1e6', '--run.server_timeout', '3']
  servers = subprocess.Popen(
      command(env, tmp_path / 'servers', *shared, '--run.parallel_roles',
              'replay,actor,envs'),
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      start_new_session=True)
  out = tmp_path / 'learner.txt'
  learner = None
  try:
    with open(out, 'w') as log:
      learner = subprocess.Popen(
          command(env, tmp_path / 'learner', *shared, '--run.parallel_roles',
                  'learner', '--run.log_every', '1'),
          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    metrics = tmp_path / 'learner' / 'metrics.jsonl'
    deadline = time.time() + 300
    while '"train/loss/' not in (metrics.read_text() if metrics.exists()
                                 else ''):
      assert learner.poll() is None, out.read_text()[-3000:]
      assert time.time() < deadline, out.read_text()[-3000:]
      time.sleep(0.5)
    os.killpg(servers.pid, signal.SIGKILL)  # The whole other "machine".
    learner.wait(timeout=120)
  finally:
    for proc in (servers, learner):
      if proc is not None and proc.poll() is None:
        proc.kill()
    try:
      os.killpg(servers.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  text = out.read_text()
  assert learner.returncode == 1, text[-3000:]
  assert re.search(r'Error: the (replay server|actor) at localhost:\d+ has '
                   r'been unreachable for 3 s', text), text[-3000:]
