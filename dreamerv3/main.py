"""Entry point: python dreamerv3/main.py --configs atari size12m --logdir ...

Turns the config into objects and starts the selected run script. This is
the only place that reads the whole config. All validation happens before
anything in the logdir is written.
"""

import functools
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import elements  # noqa: E402

import embodied  # noqa: E402
from dreamerv3 import validate  # noqa: E402
from embodied.core import seeds  # noqa: E402
# The config's entry points, also used by the tools and tests from here.
from dreamerv3.config import (  # noqa: E402,F401
    ConfigError, Seeds, check_logdir, load_blocks, parse, structural_keys,
    write_config)


def check_values(config):
  """Every check that needs the config alone (validate.check_config)."""
  validate.check_config(config)


def make_env(config, index, role='train', process=0, **overrides):
  """Env `index` of the `role` envs (train or eval) of process `process`,
  on its own random stream of the (member's) config's seed."""
  from embodied import envs
  kwargs = dict(config.env.get(config.task.split('_', 1)[0], {}))
  kwargs.update(overrides)
  return envs.make(
      config.task, seed=seeds.stream(config.seed, 'env', role, process, index),
      length=config.env.length, size=tuple(config.env.size), **kwargs)


def agent_config(config):
  """The agent's sub-config: agent.* plus the top-level keys it needs and
  the config each extension reads (its CONFIG), by extension."""
  from dreamerv3 import extensions
  return elements.Config(
      **config.agent, batch_size=config.batch_size,
      batch_length=config.batch_length, replay_context=config.replay_context,
      jax=config.jax, extensions=extensions.specs(config),
      extension_views=extensions.views(config))


def setup_jax(config, distributed=None):
  """JAX's platform, dtype and cache as the config says (once per
  process; again with the same arguments does nothing)."""
  from embodied import jax as ejax
  flags = config.jax.xla_flags
  if config.run.deterministic:
    # GPU kernels without atomics (scatter-adds, reductions) in a fixed
    # order; the CPU's are deterministic already.
    flags = f'{flags} --xla_gpu_deterministic_ops=true'.strip()
  return ejax.setup(
      config.jax.platform, config.jax.compute_dtype, config.jax.debug_nans,
      flags, os.path.expanduser(config.jax.cache_dir),
      distributed=distributed)


def make_agent(config, obs_space, act_space, distributed=None):
  """The agent, on JAX set up for this config in this process (processes
  of the parallel script build theirs with this too)."""
  setup_jax(config, distributed)
  from embodied import jax as ejax
  from dreamerv3.agent import Dreamer
  members = Seeds(config)
  agent = ejax.Agent(
      Dreamer, obs_space, act_space, agent_config(config),
      seed=seeds.stream(config.seed, 'agent'),
      members=[seeds.stream(s, 'agent') for s in members.values]
      if members.count > 1 else None)
  counts = agent.param_counts()
  print('Parameters: ' + ', '.join(
      f'{k} {v:,}' for k, v in sorted(counts.items())) +
      f' (total {sum(counts.values()):,})')
  return agent


def make_replay(config, name, directory=True, process=0):
  """Replay `name` of the (member's) config, in its logdir."""
  from embodied.core import samplers
  length = config.batch_length + config.replay_context
  path = elements.Path(config.logdir) / name if directory else None
  cls = embodied.Replay
  if config.replay.device == 'accelerator':
    from embodied.jax.replay import DeviceReplay as cls
  stream = lambda part: seeds.stream(config.seed, name, process, part)
  return cls(
      length=length, capacity=int(config.replay.size),
      chunksize=config.replay.chunksize, online=config.replay.online,
      sampler=samplers.make(config.replay, stream), directory=path,
      seed=stream('replay'))


def make_logger(config, label=None):
  """The (member's) logger; label names it in terminal summaries."""
  from embodied.run.outputs import JSONL, Summary, TensorBoard, VideoFiles
  logdir = elements.Path(config.logdir)
  step = elements.Counter()
  outputs = []
  for name in config.logger.outputs:
    if name == 'terminal':
      outputs.append(Summary(label or config.script))
    elif name == 'jsonl':
      outputs.append(JSONL(logdir, 'metrics.jsonl'))
      outputs.append(JSONL(
          logdir, 'scores.jsonl', r'^(episode|eval_episode)/(score|length)$'))
    elif name == 'videos':
      outputs.append(VideoFiles(logdir / 'videos', fps=config.logger.fps))
    elif name == 'scope':
      # Writes into LOGDIR/scope. Its video format keeps its own frame rate
      # unless told (elements sets a module constant that scope never reads).
      output = elements.logger.ScopeOutput(logdir, fps=config.logger.fps)
      for fmt in output.writer.fmts:
        if hasattr(fmt, 'fps'):
          fmt.fps = config.logger.fps
      outputs.append(output)
    elif name == 'tensorboard':
      outputs.append(TensorBoard(logdir / 'tensorboard', fps=config.logger.fps))
    elif name == 'wandb':
      outputs.append(elements.logger.WandBOutput(
          name=logdir.name, project=config.logger.wandb_project,
          config=dict(config)))
  return elements.Logger(step, outputs)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if '--help' in argv or '-h' in argv:
    from dreamerv3 import usage
    text, error = usage.render(argv, load_blocks())
    if error:
      raise ConfigError(error)
    print(text)
    return
  config = parse(argv)
  dist = validate.check_distributed(config, os.environ)
  if not config.logdir:
    stamp = elements.timestamp()
    # Task names may hold a slash (bsuite_catch/0): keep the logdir one level.
    task = config.task.replace('/', '-')
    config = config.update(logdir=f'~/logdir/{stamp}-{task}')
  logdir = elements.Path(os.path.expanduser(config.logdir))
  config = config.update(logdir=str(logdir))
  # The agent sees the whole job: global batch, one seed on every process.
  shared = config
  process = dist.process_id if dist else 0
  if process:
    # Process k > 0 writes only LOGDIR/process<k> (its config, replay,
    # metrics, checkpoint) and steps envs and samples replay on streams of
    # its own; process 0 writes the run's logdir as a single process does.
    logdir = logdir / f'process{process}'
    config = config.update(logdir=str(logdir))
  check_values(config)
  check_logdir(config, logdir)

  # Build one env first: an unknown task fails here, before the logdir.
  from embodied import envs
  try:
    env = make_env(config, 0)
  except (envs.UnknownTaskError, envs.OptionError,
          envs.MissingPackageError) as e:
    raise ConfigError(str(e)) from None
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  validate.check_spaces(config, obs_space)

  setup_jax(config, dist)
  import jax
  validate.check_devices(config, len(jax.local_devices()),
                         jax.process_count())

  print(f'Logdir: {logdir}')
  print(f'Task: {config.task}')
  print('Observations: ' + ', '.join(
      f'{k} {v.dtype.name}{v.shape}' for k, v in obs_space.items()))
  print('Actions: ' + ', '.join(
      f'{k} {v.dtype.name}{v.shape}' for k, v in act_space.items()))
  from embodied import run
  args = elements.Config(
      **config.run, logdir=str(logdir),
      # Each process samples its share of the global batch.
      batch_size=config.batch_size // (dist.num_processes if dist else 1),
      batch_length=config.batch_length,
      replay_context=config.replay_context)
  # The first write: a logdir another live run holds is refused here. Held
  # until the run ends (or its process does).
  lock = embodied.LogdirLock(logdir, run.lock_parts(config.script, args))
  try:
    lock.acquire()
  except embodied.LogdirBusy as e:
    raise ConfigError(str(e)) from None
  except OSError as e:
    raise ConfigError(
        f'Cannot write to the logdir {logdir}: {e.strerror or e}') from None
  write_config(config, logdir)
  members = Seeds(config)
  configs = members.members(config)
  if members.count > 1:
    for member in configs:
      write_config(member, member.logdir)
  labels = members.labels(config.script)

  try:
    run.get(config.script)(
        functools.partial(make_agent, shared, obs_space, act_space,
                          distributed=dist),
        by_member(make_replay, configs, process=process),
        by_member(make_env, configs, process=process),
        _member_logger(configs, labels),
        args)
  finally:
    lock.release()


class by_member:
  """make(config, ...) as the run scripts call it, make(..., member=k),
  with member k's config (each built once, by Seeds.members). A class, not
  a closure: the parallel script pickles it into its processes."""

  def __init__(self, make, configs, **kwargs):
    self.make, self.configs, self.kwargs = make, configs, kwargs

  def __call__(self, *args, member=0, **more):
    return self.make(self.configs[member], *args, **self.kwargs, **more)


class _member_logger:

  def __init__(self, configs, labels):
    self.configs, self.labels = configs, labels

  def __call__(self, member=0):
    return make_logger(self.configs[member], self.labels[member])


def cli():
  from embodied.jax import PlatformError
  from embodied.run.parallel import ParallelError
  try:
    main()
  except (ConfigError, PlatformError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  except (embodied.EnvCrashError, embodied.CheckpointError,
          ParallelError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(1)
  except embodied.Preempted as e:
    # Checkpoint saved; scripts/slurm/ requeues on this status.
    print(e, file=sys.stderr)
    sys.exit(embodied.core.preempt.EXIT_CODE)


if __name__ == '__main__':
  cli()
