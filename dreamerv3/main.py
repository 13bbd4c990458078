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
import ruamel.yaml as yaml  # noqa: E402

import embodied  # noqa: E402
from dreamerv3 import validate  # noqa: E402
from dreamerv3.validate import ConfigError  # noqa: E402

SCRIPTS = ('train', 'train_eval', 'eval_only', 'parallel')
# Where replay storage lives (embodied/jax/replay.py for accelerator).
REPLAY_DEVICES = ('host', 'accelerator')

# Keys outside the agent and the env suites that shape stored data, with
# the meaning of a missing key in an older logdir (see structural_keys).
STRUCTURAL = (
    (r'task|env\.size', None),
    (r'replay\.chunksize|replay\.fracs\..*', None),
)


def load_blocks(path=ROOT / 'configs.yaml'):
  return yaml.YAML(typ='safe').load(pathlib.Path(path).read_text())


def parse(argv, blocks=None):
  """argv -> resolved elements.Config. Raises ConfigError with a message
  that names the offending block, key or value."""
  blocks = blocks or load_blocks()
  parsed, other = elements.Flags(configs=['defaults']).parse_known(argv)
  config = elements.Config(blocks['defaults'])
  for name in parsed.configs:
    if name == 'defaults':
      continue
    if name not in blocks:
      raise ConfigError(
          f"Unknown config block '{name}'. Available blocks: "
          f"{', '.join(k for k in blocks if k != 'defaults')}")
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
  if config.script not in SCRIPTS:
    raise ConfigError(
        f"Unknown script '{config.script}', choose from {', '.join(SCRIPTS)}")
  return config


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


# Logger outputs and the package each one needs (None: always available).
OUTPUTS = {'terminal': None, 'jsonl': None, 'videos': 'av', 'scope': 'scope',
           'tensorboard': 'tensorboardX', 'wandb': 'wandb'}


def check_values(config):
  """Values that parse but cannot work, caught before the logdir."""
  validate.check_numbers(config)
  validate.check_relations(config)
  for output in config.logger.outputs:
    if output not in OUTPUTS:
      raise ConfigError(
          f"Unknown logger output '{output}' (logger.outputs): choose from "
          f"{', '.join(OUTPUTS)}")
    if OUTPUTS[output] and importlib.util.find_spec(OUTPUTS[output]) is None:
      raise ConfigError(
          f"logger.outputs has '{output}' but {OUTPUTS[output]} is not "
          f"installed: pip install {OUTPUTS[output]}")
  length = config.batch_length + config.replay_context
  if config.replay.chunksize <= length:
    raise ConfigError(
        f'replay.chunksize ({config.replay.chunksize}) must be larger than '
        f'batch_length + replay_context ({length}).')
  if len(config.env.size) != 2:
    raise ConfigError(
        f'env.size needs two values (height, width), got {config.env.size}')
  from dreamerv3.agent import PRIO_SIGNALS
  if config.replay.priosignal not in PRIO_SIGNALS:
    raise ConfigError(
        f"Unknown replay.priosignal '{config.replay.priosignal}': choose "
        f"from {', '.join(PRIO_SIGNALS)}")
  _check_replay(config.replay)
  from dreamerv3.agent import IMAGE_DISTS
  if config.agent.dec.image_dist not in IMAGE_DISTS:
    raise ConfigError(
        f"Unknown agent.dec.image_dist '{config.agent.dec.image_dist}': "
        f"choose from {', '.join(IMAGE_DISTS)}")
  from embodied.jax.outs import TWOHOT_LAYOUTS
  for head in ('rewhead', 'value'):
    layout = config.agent[head].layout
    if layout not in TWOHOT_LAYOUTS:
      raise ConfigError(
          f"Unknown agent.{head}.layout '{layout}': choose from "
          f"{', '.join(TWOHOT_LAYOUTS)}")
  from embodied.jax import COMPUTE_DTYPES, PLATFORMS
  for key, choices in (('compute_dtype', COMPUTE_DTYPES),
                       ('platform', PLATFORMS)):
    if config.jax[key] not in choices:
      raise ConfigError(
          f"Unknown jax.{key} '{config.jax[key]}': choose from "
          f"{', '.join(choices)}")
  from dreamerv3 import extensions
  error = extensions.check(config)
  if error:
    raise ConfigError(error)


def _check_replay(replay):
  from embodied.core import samplers
  fracs = dict(replay.fracs)
  for key, value in fracs.items():
    if key not in samplers.FRACS:
      raise ConfigError(
          f"Unknown sampler 'replay.fracs.{key}': choose from "
          f"{', '.join(samplers.FRACS)}")
    if value < 0:
      raise ConfigError(
          f'replay.fracs.{key} must be non-negative, got {value}')
  if not sum(fracs.values()) > 0:
    raise ConfigError(
        'replay.fracs must have a positive sum, got ' +
        ', '.join(f'replay.fracs.{k} {v}' for k, v in fracs.items()))
  try:  # The samplers check their own options (whether used or not).
    samplers.Prioritized(
        replay.prio.exponent, replay.prio.maxfrac, replay.prio.initial)
    samplers.Recency(replay.recexp)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if replay.device not in REPLAY_DEVICES:
    raise ConfigError(
        f"Unknown replay.device '{replay.device}': choose from "
        f"{', '.join(REPLAY_DEVICES)}")
  if replay.cache_every < 0:
    raise ConfigError(
        f'replay.cache_every must be non-negative, got {replay.cache_every}')
  priority = fracs.get('priority', 0) > 0
  if priority and replay.priosignal == 'none' and not replay.cache_every:
    raise ConfigError(
        'replay.fracs.priority > 0 needs replay.priosignal (or '
        'replay.cache_every): without one no priority is ever updated.')
  if replay.cache_every and not priority:
    raise ConfigError(
        'replay.cache_every refreshes priorities, which only matter with '
        'replay.fracs.priority > 0.')


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


def structural_keys(task):
  """(pattern, legacy) pairs: keys that a resumed logdir must share, each
  declared by the module that owns it, with what the key meant when an
  older logdir's config lacks it (None: not compared then)."""
  from embodied import envs
  from dreamerv3 import agent, extensions
  suite = task.split('_', 1)[0]
  rules = (list(STRUCTURAL) + list(agent.STRUCTURAL) +
           list(extensions.structural()))
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
  rules = structural_keys(config.task)
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


def make_env(config, index, **overrides):
  from embodied import envs
  kwargs = dict(config.env.get(config.task.split('_', 1)[0], {}))
  kwargs.update(overrides)
  return envs.make(
      config.task, seed=config.seed * 10007 + index,
      length=config.env.length, size=tuple(config.env.size), **kwargs)


def agent_config(config):
  """The agent's sub-config: agent.* plus the few top-level keys it needs
  (extension blocks such as dynamics.* included)."""
  return elements.Config(
      **config.agent, batch_size=config.batch_size,
      batch_length=config.batch_length, replay_context=config.replay_context,
      dynamics=config.dynamics, priosignal=config.replay.priosignal,
      jax=config.jax)


def make_agent(config, obs_space, act_space):
  from embodied import jax as ejax
  from dreamerv3.agent import Dreamer
  agent = ejax.Agent(Dreamer, obs_space, act_space, agent_config(config),
                     seed=config.seed)
  counts = agent.param_counts()
  print('Parameters: ' + ', '.join(
      f'{k} {v:,}' for k, v in sorted(counts.items())) +
      f' (total {sum(counts.values()):,})')
  return agent


def make_replay(config, name, directory=True):
  length = config.batch_length + config.replay_context
  path = elements.Path(config.logdir) / name if directory else None
  cls = embodied.Replay
  if config.replay.device == 'accelerator':
    from embodied.jax.replay import DeviceReplay as cls
  return cls(
      length=length, capacity=int(config.replay.size),
      chunksize=config.replay.chunksize, online=config.replay.online,
      sampler=make_sampler(config), directory=path, seed=config.seed)


def make_sampler(config):
  """The replay sampler from replay.fracs: one sampler directly when a
  single fraction is positive (pure uniform is the plain Uniform), else a
  Mixture of those with positive fractions."""
  from embodied.core import samplers
  c, seed = config.replay, config.seed
  fracs = {k: v for k, v in dict(c.fracs).items() if v > 0}
  build = {
      'uniform': lambda: samplers.Uniform(seed),
      # Distinct seeds so the parts of a mixture draw independently.
      'priority': lambda: samplers.Prioritized(
          c.prio.exponent, c.prio.maxfrac, c.prio.initial,
          c.prio.zero_on_sample, seed=seed + 1),
      'recency': lambda: samplers.Recency(c.recexp, seed=seed + 2)}
  parts = {k: build[k]() for k in samplers.FRACS if k in fracs}
  if len(parts) == 1:
    return next(iter(parts.values()))
  return samplers.Mixture(parts, fracs)


def make_logger(config):
  from embodied.run.common import JSONL, Summary, TensorBoard, VideoFiles
  logdir = elements.Path(config.logdir)
  step = elements.Counter()
  outputs = []
  for name in config.logger.outputs:
    if name == 'terminal':
      outputs.append(Summary(config.script))
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
  config = parse(sys.argv[1:] if argv is None else argv)
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
  if dist and dist.process_id:
    # Process k > 0 writes only LOGDIR/process<k> (its config, replay,
    # metrics, checkpoint) and steps envs and samples replay with seeds of
    # its own; process 0 writes the run's logdir as a single process does.
    logdir = logdir / f'process{dist.process_id}'
    config = config.update(logdir=str(logdir), seed=(
        config.seed + 7919 * dist.process_id) % 2 ** 31)
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
  if config.run.from_checkpoint:
    from embodied.core.checkpoint import find
    if find(os.path.expanduser(config.run.from_checkpoint)) is None:
      raise ConfigError(
          f'run.from_checkpoint {config.run.from_checkpoint} holds no complete '
          'checkpoint: give a logdir, its ckpt/ folder, one checkpoint folder '
          'or the ckpt/latest file.')

  from embodied import jax as ejax
  ejax.setup(config.jax.platform, config.jax.compute_dtype,
             config.jax.debug_nans, config.jax.xla_flags,
             os.path.expanduser(config.jax.cache_dir), distributed=dist)
  import jax
  validate.check_devices(config, len(jax.local_devices()),
                         jax.process_count())

  print(f'Logdir: {logdir}')
  print(f'Task: {config.task}')
  print('Observations: ' + ', '.join(
      f'{k} {v.dtype.name}{v.shape}' for k, v in obs_space.items()))
  print('Actions: ' + ', '.join(
      f'{k} {v.dtype.name}{v.shape}' for k, v in act_space.items()))
  write_config(config, logdir)

  from embodied import run
  fn = getattr(run, config.script)
  args = elements.Config(
      **config.run, logdir=str(logdir),
      # Each process samples its share of the global batch.
      batch_size=config.batch_size // (dist.num_processes if dist else 1),
      batch_length=config.batch_length,
      replay_context=config.replay_context,
      cache_every=config.replay.cache_every)
  # The parallel script's processes that run JAX set it up as this one.
  extra = {'setup': functools.partial(
      ejax.setup, config.jax.platform, config.jax.compute_dtype,
      config.jax.debug_nans, config.jax.xla_flags,
      os.path.expanduser(config.jax.cache_dir))} \
      if config.script == 'parallel' else {}
  fn(functools.partial(make_agent, shared, obs_space, act_space),
     functools.partial(make_replay, config),
     functools.partial(make_env, config),
     functools.partial(make_logger, config),
     args, **extra)


def cli():
  from embodied.jax import PlatformError
  try:
    main()
  except (ConfigError, PlatformError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  except (embodied.EnvCrashError, embodied.CheckpointError) as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(1)
  except embodied.Preempted as e:
    # Checkpoint saved; scripts/slurm/ requeues on this status.
    print(e, file=sys.stderr)
    sys.exit(embodied.core.preempt.EXIT_CODE)


if __name__ == '__main__':
  cli()
