"""The per-seed parts of a run, for one seed or for several seeds trained
as one program (run.seeds).

With N members the agent holds N independent agents along a leading axis
(its `axis`, embodied/core/axis.py, says how values are laid out for
one member or several); everything else exists once per member:
its replay, logger (LOGDIR/seed<k>/), step counter, episode statistics,
extension host state, policy video and envs. The driver steps all N * E envs
in lockstep; env i belongs to member i // E, where it is env i % E. The
members' batches are sampled from their own replays and stacked, so one
train step trains every member on its own data; outputs and metrics are
split back per member. With one member the agent has no member axis and
the run is the one-seed run.
"""

import functools

import numpy as np

from embodied.core import Stacked

from . import common


class Members:

  def __init__(self, agent, make_replay, make_logger, envs, video_every=0):
    """make_replay None: no replays (evaluation only)."""
    self.agent = agent
    self.axis = agent.axis
    self.count = self.axis.count
    self.envs = envs  # Per member.
    self.replays = [make_replay('replay', member=k)
                    for k in range(self.count)] if make_replay else []
    self.loggers = [make_logger(member=k) for k in range(self.count)]
    self.steps = [logger.step for logger in self.loggers]
    self.episodes = [common.Episodes(logger) for logger in self.loggers]
    self.hosts = list(agent.hosts)
    self.videos = [common.PolicyVideo(video_every)
                   for _ in range(self.count)]
    self.replay = None
    if self.replays:
      self.replay = (Stacked(self.replays) if self.axis.stacked
                     else self.replays[0])

  @property
  def step(self):
    """The run's step counter: every member's, in lockstep."""
    return self.steps[0]

  def env_fns(self, make_env, role='train', count=None):
    """The make-env functions of all members' envs, member by member."""
    count = count or self.envs
    return [functools.partial(make_env, i, role=role, member=k)
            for k in range(self.count) for i in range(count)]

  def route(self, callback, count=None):
    """A driver callback that calls callback(k, tran, worker) with the
    member k of the env and its index among the member's envs."""
    count = count or self.envs
    return lambda tran, worker: callback(
        worker // count, tran, worker % count)

  def on_step(self, k, tran, worker):
    self.steps[k].increment()
    self.replays[k].add(tran, worker)
    self.episodes[k](tran, worker)
    if self.hosts:
      self.hosts[k].on_step(tran, worker)
    self.videos[k](tran, worker)

  def policy(self, mode):
    """The driver's policy over all members' envs in a row."""
    axis = self.axis

    def policy(carry, obs):
      obs = {k: axis.to_members(v) for k, v in obs.items()}
      carry, act, outs = self.agent.policy(carry, obs, mode=mode)
      flat = lambda tree: {k: axis.from_members(v) for k, v in tree.items()}
      return carry, flat(act), flat(outs)
    return policy

  def init_policy(self, envs):
    return self.agent.init_policy(envs // self.count)

  def split(self, metrics):
    """Per-member metrics: [N] values (and [N, ...] videos) by member."""
    return self.axis.split(metrics)

  def register(self, checkpoint):
    """Per-member state in the run's checkpoint; one member uses the
    one-seed run's names."""
    suffix = str if self.axis.stacked else (lambda k: '')
    for k in range(self.count):
      checkpoint.register(f'step{suffix(k)}', self.steps[k])
      if self.replays:
        checkpoint.register(f'replay{suffix(k)}', self.replays[k])
      if self.hosts:
        checkpoint.register(f'host{suffix(k)}', self.hosts[k])

  def mean_score(self):
    return float(np.mean([e.mean_recent() for e in self.episodes]))
