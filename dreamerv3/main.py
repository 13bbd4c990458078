"""Entry point: python dreamerv3/main.py --configs atari size12m --logdir ...

Turns the config into objects and starts the selected run script. This is
the only place that reads the whole config. All validation happens before
anything in the logdir is written.
"""

import functools
import importlib.util
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import elements  # noqa: E402
import numpy as np  # noqa: E402
import ruamel.yaml as yaml  # noqa: E402

import embodied  # noqa: E402
from dreamerv3 import validate  # noqa: E402
from embodied.core import seeds  # noqa: E402
from dreamerv3.validate import ConfigError  # noqa: E402

# Keys outside the agent and the env suites that shape stored data, with
# the meaning of a missing key in an older logdir (see structural_keys).
STRUCTURAL = (
    (r'task|env\.size|run\.seeds', None),
    (r'replay\.chunksize|replay\.fracs\..*', None),
)

# Config checks (dreamerv3/validate.py) of the top-level and logger keys.
RANGES = (
    (r'seed', 'int', 0, 2 ** 31 - 1),
    (r'batch_size|batch_length', 'int', 1, None),
    (r'replay_context', 'int', 0, None),
    (r'logger\.fps', 'number', 1e-9, None),
)
# Logger outputs and the package each one needs (None: always available).
OUTPUTS = {'terminal': None, 'jsonl': None, 'videos': 'av', 'scope': 'scope',
           'tensorboard': 'tensorboardX', 'wandb': 'wandb'}


def member_seeds(config):
  """run.seeds -> the seeds of the run's members: a count N gives seed ..
  seed + N - 1, a comma-separated list those seeds. ValueError naming the
  key on bad input."""
  text = str(config.run.seeds)
  parts = [p.strip() for p in text.split(',') if p.strip()]
  try:
    values = [int(p) for p in parts]
  except ValueError:
    values = []
  if not values:
    raise ValueError(f'run.seeds needs a count or a comma-separated list of '
                     f'seeds, got {text!r}')
  if len(values) == 1:
    if values[0] < 1:
      raise ValueError(f'run.seeds must be at least 1, got {values[0]}')
    values = [config.seed + i for i in range(values[0])]
  if len(set(values)) < len(values):
    raise ValueError(f'run.seeds lists a seed twice: {text}')
  if not all(0 <= v < 2 ** 31 for v in values):
    raise ValueError(f'run.seeds must be between 0 and {2 ** 31 - 1}: {text}')
  return values


def member_config(config, k):
  """Member k's config: its seed and logdir LOGDIR/seed<s>; a run of one
  seed is its own member."""
  seeds = member_seeds(config)
  if len(seeds) == 1:
    return config
  return config.update({'seed': seeds[k], 'run.seeds': '1',
                        'logdir': f'{config.logdir}/seed{seeds[k]}'})


def _check_members(config):
  try:
    count = len(member_seeds(config))
  except ValueError as e:
    return str(e)
  if count == 1:
    return None
  for refused, reason in (
      (config.script == 'parallel', 'script parallel'),
      (config.jax.policy_devices, 'jax.policy_devices')):
    if refused:
      return f'run.seeds {config.run.seeds} ({count} seeds in one program) ' \
             f'does not work with {reason} yet: run the seeds separately'
  return None


def check(config):
  error = _check_members(config)
  if error:
    return error
  for output in config.logger.outputs:
    if output not in OUTPUTS:
      return (f"Unknown logger output '{output}' (logger.outputs): choose "
              f"from {', '.join(OUTPUTS)}")
    if OUTPUTS[output] and importlib.util.find_spec(OUTPUTS[output]) is None:
      return (f"logger.outputs has '{output}' but {OUTPUTS[output]} is not "
              f"installed: pip install {OUTPUTS[output]}")
  return None


def check_processes(config, settings):
  if len(member_seeds(config)) > 1:
    return (f'run.seeds {config.run.seeds} trains its seeds in one process; '
            f'jax.distributed found {settings.num_processes} processes '
            f'({settings.source}): use jax.distributed.mode off')
  return None


def check_devices(config, count, processes=1):
  members = len(member_seeds(config))
  train = config.jax.train_devices or count
  if members > 1 and members % train:
    return (f'run.seeds gives {members} seeds, which the {train} train '
            'devices must divide: the seeds are split over them')
  return None


def check_spaces(config, obs_space):
  """The replay buffers of all seeds must fit in this machine's memory."""
  members = len(member_seeds(config))
  step = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
             for s in obs_space.values())
  steps = min(int(config.replay.size), int(config.run.steps))
  need = members * steps * step
  have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if members > 1 and need > have:
    return (f'run.seeds {config.run.seeds}: {members} replay buffers of '
            f'min(replay.size, run.steps) = {steps:,} steps of '
            f'{step:,} bytes need {need / 2 ** 30:.1f} GiB, more than this '
            f"machine's {have / 2 ** 30:.1f} GiB: fewer seeds or a smaller "
            'replay.size')
  return None


def load_blocks(path=ROOT / 'configs.yaml'):
  return yaml.YAML(typ='safe').load(pathlib.Path(path).read_text())


def parse(argv, blocks=None):
  """argv -> resolved elements.Config. Raises ConfigError with a message
  that names the offending block, key or value."""
  blocks = blocks or load_blocks()
  parsed, other = elements.Flags(configs=['defaults']).parse_known(argv)
  names = [name for name in parsed.configs if name != 'defaults']
  for name in names:
    if name not in blocks:
      raise ConfigError(
          f"Unknown config block '{name}'. Available blocks: "
          f"{', '.join(k for k in blocks if k != 'defaults')}")
  config = elements.Config(_with_extensions(blocks, names, other))
  for name in names:
    try:
      _check_bools(config, blocks[name], name)
      config = config.update(blocks[name])
    except (KeyError, TypeError) as e:
      raise ConfigError(f"In config block '{name}': {_msg(e)}") from None
  try:
    config = elements.Flags(config).parse(other)
  except (KeyError, TypeError, ValueError) as e:
    raise ConfigError(_msg(e)) from None
  except (OverflowError, AssertionError):
    # elements fails without naming the key, e.g. on inf for an integer.
    raise ConfigError(_bad_number(config, other)) from None
  return config


def _with_extensions(blocks, names, argv):
  """The defaults plus the new keys (DEFAULTS) of the extension modules
  that --extensions or a block names."""
  from dreamerv3 import extensions
  specs = blocks['defaults'].get('extensions', '')
  for name in names:
    specs = blocks[name].get('extensions', specs)
  for i, arg in enumerate(argv):
    if arg == '--extensions' and i + 1 < len(argv):
      specs = argv[i + 1]
    elif arg.startswith('--extensions='):
      specs = arg.split('=', 1)[1]
  defaults = dict(blocks['defaults'])
  try:
    modules = extensions.modules({'extensions': specs})
  except (ImportError, OSError, SyntaxError) as e:
    raise ConfigError(
        f'extensions: cannot load {specs!r} ({type(e).__name__}: {e})'
    ) from None
  for module in modules:
    for key, value in getattr(module, 'DEFAULTS', {}).items():
      if key in defaults:
        raise ConfigError(
            f"extension {module.__name__} declares the config key '{key}', "
            'which exists already')
      defaults[key] = value
  return defaults


def _check_bools(config, block, name, prefix=''):
  """elements converts any string to bool; a block must say True/False."""
  for key, value in block.items():
    full = f'{prefix}.{key}' if prefix else key
    if isinstance(value, dict):
      _check_bools(config, value, name, full)
      continue
    keys = [k for k in config.flat if re.fullmatch(full, k)] \
        if elements.Config.IS_PATTERN.match(full) else [full]
    for k in keys:
      if isinstance(config.flat.get(k), bool) and not isinstance(value, bool):
        raise ConfigError(
            f"In config block '{name}': key '{k}' needs True or False, "
            f"got {value!r}")


def check_values(config):
  """Every check that needs the config alone (validate.check_config)."""
  validate.check_config(config)


def _bad_number(config, argv):
  """The message for the first --key value pair that elements cannot parse
  into its key's number type."""
  for key, value in zip(argv, argv[1:]):
    if not key.startswith('--'):
      continue
    try:
      elements.Flags(config).parse([key, value])
    except Exception:
      kind = type(config.flat.get(key[2:])).__name__
      return f'{key[2:]} needs a finite {kind}, got {value}'
  return f'Cannot parse the number flags {" ".join(argv)}'


def _msg(e):
  text = str(e.args[0]) if e.args else str(e)
  return text.replace("Flag '", "Unknown config key '").replace(
      "' did not match any config keys.", "'.")


def structural_keys(config):
  """(pattern, legacy) pairs: keys that a resumed logdir must share, each
  declared by the module that owns it, with what the key meant when an
  older logdir's config lacks it (None: not compared then)."""
  from embodied import envs
  from dreamerv3 import agent, extensions
  suite = config.task.split('_', 1)[0]
  rules = (list(STRUCTURAL) + list(agent.STRUCTURAL) +
           list(extensions.structural(config)))
  if suite in envs.SUITES:
    module = importlib.import_module(envs.SUITES[suite])
    rules += [(rf'env\.{suite}\.{key}', None)
              for key in getattr(module, 'SHAPE_OPTIONS', ())]
  return rules


def check_logdir(config, logdir):
  """Refuse to resume a logdir whose saved config differs in structure."""
  path = elements.Path(logdir) / 'config.yaml'
  if not path.exists():
    return
  old = elements.Config.load(path).flat
  new = config.flat
  rules = structural_keys(config)
  diffs = []
  for key in sorted(new):
    legacy = next((l for p, l in rules if re.fullmatch(p, key)), KeyError)
    if legacy is KeyError:  # Not structural.
      continue
    if key in old:
      was = old[key]
      text = repr(was)
    elif legacy is not None:
      was = legacy
      text = f'{legacy!r} (written before the key existed)'
    else:
      continue
    if was != new[key]:
      diffs.append(f'  {key}: logdir has {text}, now {new[key]!r}')
  if diffs:
    raise ConfigError(
        f'The logdir {logdir} holds a run with an incompatible config:\n' +
        '\n'.join(diffs) + '\nUse a new --logdir or the same settings.')


def write_config(config, logdir):
  logdir = elements.Path(logdir)
  try:
    logdir.mkdir()
    tmp = logdir / 'config.tmp.yaml'
    config.save(tmp)
    os.replace(str(tmp), str(logdir / 'config.yaml'))
  except OSError as e:
    raise ConfigError(
        f'Cannot write to the logdir {logdir}: {e.strerror or e}') from None


def make_env(config, index, role='train', process=0, member=0,
             **overrides):
  """Env `index` of the `role` envs (train or eval) of process `process`
  and run member `member`, on its own random stream of the member's seed."""
  from embodied import envs
  config = member_config(config, member)
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
      ext=extensions.views(config))


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
  members = member_seeds(config)
  agent = ejax.Agent(
      Dreamer, obs_space, act_space, agent_config(config),
      seed=seeds.stream(config.seed, 'agent'),
      members=[seeds.stream(s, 'agent') for s in members]
      if len(members) > 1 else None)
  counts = agent.param_counts()
  print('Parameters: ' + ', '.join(
      f'{k} {v:,}' for k, v in sorted(counts.items())) +
      f' (total {sum(counts.values()):,})')
  return agent


def make_replay(config, name, directory=True, process=0, member=0):
  from embodied.core import samplers
  config = member_config(config, member)
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


def make_logger(config, member=0):
  several = len(member_seeds(config)) > 1
  config = member_config(config, member)
  from embodied.run.common import JSONL, Summary, TensorBoard, VideoFiles
  logdir = elements.Path(config.logdir)
  step = elements.Counter()
  outputs = []
  for name in config.logger.outputs:
    if name == 'terminal':
      outputs.append(Summary(
          f'{config.script} seed{config.seed}' if several else config.script))
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
      replay_context=config.replay_context,
      cache_every=config.replay.cache_every)
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
  if len(member_seeds(config)) > 1:
    for k in range(len(member_seeds(config))):
      member = member_config(config, k)
      write_config(member, member.logdir)

  try:
    run.get(config.script)(
        functools.partial(make_agent, shared, obs_space, act_space,
                          distributed=dist),
        functools.partial(make_replay, config, process=process),
        functools.partial(make_env, config, process=process),
        functools.partial(make_logger, config),
        args)
  finally:
    lock.release()


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
