"""The config: loaded from configs.yaml and the command line, checked, and
compared with a logdir's. main.py turns it into objects.

`parse(argv)` applies the blocks named by --configs over `defaults` (plus
the namespaces extension modules declare), then the --key value overrides;
every error names the block, key or value. Older key names that extension
modules declare (ALIASES) are renamed by `rename` wherever a key is given:
on the command line, in blocks and in a logdir's saved config. This module
also owns the top-level keys (seed, batch, run.seeds, logger, how replay is
built) and their checks (dreamerv3/validate.py asks it like every other
owner), the rules for resuming a logdir, and `Seeds`: run.seeds parsed
once.
"""

import importlib
import importlib.util
import os
import pathlib
import re

import elements
import numpy as np
import ruamel.yaml as yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


class ConfigError(Exception):
  pass


# Keys outside the agent and the env suites that shape stored data, with
# the meaning of a missing key in an older logdir (see structural_keys).
STRUCTURAL = (
    (r'task|env\.size|run\.seeds', None),
    (r'replay\.chunksize|replay\.fracs\..*', None),
)

# Config checks (dreamerv3/validate.py) of the top-level and logger keys.
RANGES = (
    (r'seed', 'int', 0, 2 ** 31 - 1),
    (r'replay\.(size|chunksize)', 'int', 1, None),
    (r'batch_size|batch_length', 'int', 1, None),
    (r'replay_context', 'int', 0, None),
    (r'logger\.fps', 'number', 1e-9, None),
)
# replay.device accelerator keeps a mirror on the first JAX device
# (embodied/jax/replay.py).
CHOICES = {'replay.device': ('host', 'accelerator')}
# Logger outputs and the package each one needs (None: always available).
OUTPUTS = {'terminal': None, 'jsonl': None, 'videos': 'av', 'scope': 'scope',
           'tensorboard': 'tensorboardX', 'wandb': 'wandb'}


class Seeds:
  """run.seeds parsed once: the seeds of the run's members (a count N gives
  seed .. seed + N - 1, a comma-separated list those seeds) and each
  member's config (its seed; with several, its logdir LOGDIR/seed<s>).
  ConfigError naming the key on bad input."""

  def __init__(self, config):
    text = str(config.run.seeds)
    parts = [p.strip() for p in text.split(',') if p.strip()]
    try:
      values = [int(p) for p in parts]
    except ValueError:
      values = []
    if not values:
      raise ConfigError(f'run.seeds needs a count or a comma-separated list '
                        f'of seeds, got {text!r}')
    if len(values) == 1:
      if values[0] < 1:
        raise ConfigError(f'run.seeds must be at least 1, got {values[0]}')
      values = [config.seed + i for i in range(values[0])]
    if len(set(values)) < len(values):
      raise ConfigError(f'run.seeds lists a seed twice: {text}')
    if not all(0 <= v < 2 ** 31 for v in values):
      raise ConfigError(
          f'run.seeds must be between 0 and {2 ** 31 - 1}: {text}')
    self.text = text
    self.values = values
    self.count = len(values)

  def members(self, config):
    """Each member's config; a run of one seed is its own member."""
    if self.count == 1:
      return [config]
    return [config.update({'seed': s, 'run.seeds': '1',
                           'logdir': f'{config.logdir}/seed{s}'})
            for s in self.values]

  def labels(self, script):
    """Each member's name in terminal summaries."""
    if self.count == 1:
      return [script]
    return [f'{script} seed{s}' for s in self.values]


def _check_members(config):
  try:
    count = Seeds(config).count
  except ConfigError as e:
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
  error = _check_members(config) or _check_replay(config)
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
  if Seeds(config).count > 1:
    return (f'run.seeds {config.run.seeds} trains its seeds in one process; '
            f'jax.distributed found {settings.num_processes} processes '
            f'({settings.source}): use jax.distributed.mode off')
  return _check_replay_processes(config, settings)


def check_devices(config, count, processes=1):
  members = Seeds(config).count
  train = config.jax.train_devices or count
  if members > 1 and members % train:
    return (f'run.seeds gives {members} seeds, which the {train} train '
            'devices must divide: the seeds are split over them')
  return None


def check_spaces(config, obs_space):
  """The replay buffers of all seeds must fit in this machine's memory."""
  members = Seeds(config).count
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


def _check_replay_processes(config, settings):
  if config.replay.device == 'accelerator':
    # Its batches are arrays on this process's first device, which the
    # train step of a multi-process mesh cannot take as its local rows.
    return (f'replay.device accelerator works in one process; '
            f'jax.distributed found {settings.num_processes} processes '
            f'({settings.source}): use replay.device host')
  return None


def _check_replay(config):
  length = config.batch_length + config.replay_context
  if config.replay.chunksize <= length:
    return (f'replay.chunksize ({config.replay.chunksize}) must be larger '
            f'than batch_length + replay_context ({length}).')
  streams = config.run.envs
  slots = max(2, -(-int(config.replay.size) // config.replay.chunksize))
  if slots <= streams:
    return (f'replay.size ({int(config.replay.size)}) must hold more than '
            f'run.envs + 1 = {streams + 1} chunks of replay.chunksize '
            f'({config.replay.chunksize}): each env writes into its own chunk '
            'and one more is needed to evict the oldest.')
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
  defaults, aliases = _with_extensions(blocks, names, other)
  config = elements.Config(defaults)
  known = config.flat
  for name in names:
    block = renamed(_flat(blocks[name]), aliases, known)
    try:
      _check_bools(config, block, name)
      config = config.update(block)
    except (KeyError, TypeError) as e:
      raise ConfigError(f"In config block '{name}': {_msg(e)}") from None
  other = _renamed_argv(other, aliases, known)
  try:
    config = elements.Flags(config).parse(other)
  except (KeyError, TypeError, ValueError) as e:
    raise ConfigError(_msg(e)) from None
  except (OverflowError, AssertionError):
    # elements fails without naming the key, e.g. on inf for an integer.
    raise ConfigError(_bad_number(config, other)) from None
  return config


def _with_extensions(blocks, names, argv):
  """(defaults, aliases): the defaults plus the namespaces (DEFAULTS) of the
  extension modules, built-in and named by --extensions or a block, and
  their ALIASES."""
  return declared(blocks['defaults'], extension_specs(argv, blocks, names))


def extension_specs(argv, blocks, names=()):
  """The `extensions` value of the command line: --extensions in argv, else
  the last of the blocks `names` that sets it, else the defaults'."""
  specs = blocks['defaults'].get('extensions', '')
  for name in names:
    specs = blocks[name].get('extensions', specs)
  for i, arg in enumerate(argv):
    if arg == '--extensions' and i + 1 < len(argv):
      specs = argv[i + 1]
    elif arg.startswith('--extensions='):
      specs = arg.split('=', 1)[1]
  return specs


def declared(defaults, specs=''):
  """(defaults plus every extension's namespace, {older key: key}) of the
  built-in extensions and the comma-separated `specs`. ConfigError naming
  a key that two of them, or an extension and the defaults, declare."""
  from dreamerv3 import extensions
  names = extensions.specs({'extensions': specs})
  try:
    modules = [extensions.load(spec) for spec in names]
    declares = [extensions.defaults(module) for module in modules]
  except (ImportError, OSError, SyntaxError, TypeError,
          yaml.YAMLError) as e:
    raise ConfigError(
        f'extensions: cannot load {specs!r} ({type(e).__name__}: {e})'
    ) from None
  defaults = dict(defaults)
  owner = {key: 'configs.yaml' for key in defaults}
  aliases, alias_owner = {}, {}
  for spec, module, tree in zip(names, modules, declares):
    space = extensions.short(spec)
    for key, value in tree.items():
      if key != space:
        raise ConfigError(
            f"extension {spec} declares the config key '{key}': an "
            f"extension's keys go under its own name, '{space}'")
      if key in owner:
        raise ConfigError(
            f"extension {spec} declares the config key '{key}', which "
            f'{owner[key]} declares already')
      owner[key], defaults[key] = spec, value
    for old, new in getattr(module, 'ALIASES', {}).items():
      if old in aliases:
        raise ConfigError(
            f"extension {spec} declares the alias '{old}', which "
            f'{alias_owner[old]} declares already')
      if new.split('.')[0] != space:
        raise ConfigError(
            f"extension {spec} aliases '{old}' to '{new}', outside its own "
            f"keys '{space}.*'")
      aliases[old], alias_owner[old] = new, spec
  flat = elements.Config(defaults).flat
  for old in aliases:
    if any(k == old or k.startswith(old + '.') for k in flat):
      raise ConfigError(
          f"extension {alias_owner[old]} declares the alias '{old}', which "
          'is a config key')
  return defaults, aliases


def rename(key, aliases):
  """The key an older name stands for: the longest alias that is the key
  or a prefix of it (at a dot) replaced by its target; the key itself when
  no alias matches."""
  for old in sorted(aliases, key=len, reverse=True):
    if key == old or key.startswith(old + '.'):
      return aliases[old] + key[len(old):]
  return key


def _renamed_key(key, aliases, known):
  # Only into a known key, so that an error names a wrong key as typed;
  # regex keys match today's names themselves.
  if elements.Config.IS_PATTERN.match(key):
    return key
  new = rename(key, aliases)
  return new if new in known else key


def renamed(flat, aliases, known):
  """{key: value} with older key names renamed into the known keys."""
  return {_renamed_key(k, aliases, known): v for k, v in flat.items()}


def _renamed_argv(argv, aliases, known):
  """Command-line flags (--key value, --key=value) with older key names
  renamed into the known keys."""
  out = []
  for arg in argv:
    if arg.startswith('--'):
      key, eq, value = arg[2:].partition('=')
      arg = f'--{_renamed_key(key, aliases, known)}{eq}{value}'
    out.append(arg)
  return out


def _flat(block, prefix=''):
  """A config block as {dotted key: value}; a regex key keeps its value."""
  out = {}
  for key, value in block.items():
    full = f'{prefix}.{key}' if prefix else key
    if (isinstance(value, dict) and value and
        not elements.Config.IS_PATTERN.match(full)):
      out.update(_flat(value, full))
    else:
      out[full] = value
  return out


def load_logdir_config(logdir, config):
  """A logdir's saved config.yaml as {key: value}, keys under today's names
  (the aliases of config's extensions), or None without one."""
  path = elements.Path(logdir) / 'config.yaml'
  if not path.exists():
    return None
  _, aliases = declared({}, config.get('extensions', ''))
  return renamed(elements.Config.load(path).flat, aliases, config.flat)


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
  old = load_logdir_config(logdir, config)
  if old is None:
    return
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


