"""Stop a run cleanly when the cluster asks: SLURM sends SIGUSR1 ahead of a
time limit (sbatch --signal) and SIGTERM on preemption or scancel.

Invariants:
- The signal handler only records the signal; the run loop polls
  `requested` at its head, leaves the loop, and the code after the loop
  saves the checkpoint and closes the envs. Nothing is written from inside
  the handler, so a signal during a checkpoint save cannot corrupt it.
- Repeated signals are absorbed (the first one is kept in `signal`);
  SIGKILL after the scheduler's grace period still ends the process, and
  the checkpoint layout makes that safe too.
- close() restores the handlers that were installed before, so the class
  can be used inside a longer-lived process (tests, notebooks).
- A run stopped this way raises Preempted after its checkpoint is saved;
  dreamerv3/main.py turns that into EXIT_CODE (3), which the scripts under
  scripts/slurm/ answer with `scontrol requeue`. Resuming needs nothing
  else: main.py continues from the logdir's latest checkpoint.
"""

import signal as signal_module
import threading

# Exit status of a process that stopped on request after saving its
# checkpoint: 0 is a finished run, 1 a crash, 2 a config error.
EXIT_CODE = 3

SIGNALS = ('SIGUSR1', 'SIGTERM')


class Preempted(Exception):
  """A run left its loop on a stop signal; its checkpoint is saved."""

  def __init__(self, signame, step=None):
    at = f' at step {step:,}' if step is not None else ''
    super().__init__(f'Stopped by {signame}{at}; checkpoint saved.')
    self.signame = signame
    self.step = step


class Preemption:
  """Records the first of `signals` (names such as 'SIGUSR1') that arrives.

    preempt = Preemption()
    while ...:
      if preempt.requested:
        break
    preempt.close()
  """

  def __init__(self, signals=SIGNALS):
    self.signal = None
    self._previous = {}
    # Python only lets the main thread install handlers; a loop run from
    # another thread simply never sees a request.
    if threading.current_thread() is not threading.main_thread():
      return
    for name in signals:
      number = getattr(signal_module, name)
      self._previous[number] = signal_module.signal(number, self._handle)

  @property
  def requested(self):
    return self.signal is not None

  def _handle(self, number, frame):
    if self.signal is None:
      self.signal = signal_module.Signals(number).name

  def close(self):
    for number, previous in self._previous.items():
      # None: the previous handler was not set from Python; the default
      # action is the closest we can restore.
      signal_module.signal(
          number, signal_module.SIG_DFL if previous is None else previous)
    self._previous = {}

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.close()
