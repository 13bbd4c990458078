"""One run per logdir: a second command on a logdir in use is refused.

A run holds a POSIX record lock (fcntl.lockf) on LOGDIR/lock for its whole
life and writes who holds it (pid, host, start time, command) into that
file. The kernel drops the lock when the process ends in any way, SIGKILL
and crashes included, so a killed run never blocks its own resume and
there is no stale lock to clean up; the file stays, its text is read only
while somebody holds the lock.

Parts: a command that runs only some processes of a job (the parallel
script's run.parallel_roles on several machines) holds LOGDIR/lock shared
and LOGDIR/lock.<part> exclusively for each part it runs (learner, replay,
actor, envs<i>). Commands of one job hence share a logdir, two commands
that run the same part do not, and a whole run excludes them all.

Shared filesystems: NFSv4 keeps these locks on the server, so they hold
across machines; the server frees the lock of a machine that died without
unlocking after its lease (90 s by default). NFSv3 needs the lock daemon
(mounts with `nolock` keep locks per machine). Lustre keeps them across
nodes when mounted with `flock`, per node with `localflock`; a filesystem
that refuses locks (Lustre `noflock`, some FUSE mounts) gets one warning
and the run goes on without the guarantee.
"""

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time

NAME = 'lock'
BUSY = (errno.EACCES, errno.EAGAIN)


class LogdirBusy(Exception):
  """The logdir is held by another live process (one-line message)."""


class LogdirLock:

  def __init__(self, logdir, parts=None):
    """parts: None for a whole run, else the names of the parts of a job
    that this command runs."""
    self._logdir = str(logdir)
    self._parts = list(parts) if parts else None
    self._fds = []

  def acquire(self):
    """Takes the locks or raises LogdirBusy naming the holder; creates the
    logdir if needed. Idempotent."""
    if self._fds:
      return self
    os.makedirs(self._logdir, exist_ok=True)
    try:
      if self._parts is None:
        self._take(NAME, exclusive=True)
      else:
        self._take(NAME, exclusive=False)
        for part in self._parts:
          self._take(f'{NAME}.{part}', exclusive=True)
    except BaseException:
      self.release()
      raise
    return self

  def release(self):
    for fd in self._fds:
      os.close(fd)  # Closing drops the lock.
    self._fds = []

  def _take(self, name, exclusive):
    path = os.path.join(self._logdir, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) |
                  fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in BUSY:
        raise LogdirBusy(self._busy(name)) from None
      print(f'Warning: cannot lock {path} ({os.strerror(e.errno)}): this '
            'filesystem does not support locks, so a second run on this '
            'logdir would not be refused.', file=sys.stderr)
      return
    self._fds.append(fd)
    if exclusive:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(holder()).encode() + b'\n', 0)

  def _busy(self, name):
    if name == NAME:
      # A whole run, or the parts of a job (they hold their part files).
      holders = [read(os.path.join(self._logdir, NAME))]
      if self._parts is None:
        holders = [read(path) for path in self._held_parts()] or holders
    else:
      holders = [read(os.path.join(self._logdir, name))]
    who = '; '.join(describe(h) for h in holders)
    return (f'The logdir {self._logdir} is in use by {who}: wait for that '
            'run to end (or stop it), or choose another --logdir.')

  def _held_parts(self):
    paths = []
    for entry in sorted(os.listdir(self._logdir)):
      if not entry.startswith(NAME + '.'):
        continue
      path = os.path.join(self._logdir, entry)
      fd = os.open(path, os.O_RDONLY)
      try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
      except OSError:
        paths.append(path)
      finally:
        os.close(fd)
    return paths


def holder():
  return {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S'),
          'command': shlex.join([sys.executable] + sys.argv)}


def read(path):
  try:
    with open(path) as f:
      return json.loads(f.read())
  except (OSError, ValueError):
    return {}  # Being written this very moment.


def describe(info):
  if not info.get('pid'):
    return 'another process'
  text = f"pid {info['pid']} on {info.get('host', '?')}"
  if info.get('started'):
    text += f" (since {info['started']})"
  if info.get('command'):
    text += f": {info['command']}"
  return text
