"""Extension config: one namespace per extension, named by its module,
with its defaults (and their --help comments) declared in the module and
the method's own flags accepted as aliases wherever a key is given."""

import inspect
import subprocess
import sys
import textwrap

import elements
import pytest
import ruamel.yaml as yaml

from dreamerv3 import config as config_module
from dreamerv3 import extensions, intrinsic, main, masking, priority, tools
from dreamerv3 import usage
from dreamerv3.main import ConfigError, check_logdir, parse
from tests.test_extensions import ROOT, TOY

BUILTIN = [extensions.load(spec) for spec in extensions.BUILTIN]


def declared(module):
  return yaml.YAML(typ='safe').load(module.DEFAULTS)


def changed(value):
  """A value of the same type that differs from the default."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return value / 2 + 0.25
  return value + '_x'


def alias_cases():
  """(older key, today's key, a non-default value) for every key that an
  alias of a built-in extension stands for."""
  flat = parse([]).flat
  aliases = {k: v for m in BUILTIN for k, v in m.ALIASES.items()}
  cases = []
  for old, new in aliases.items():
    for key in flat:
      if key != new and not key.startswith(new + '.'):
        continue
      older = old + key[len(new):]
      if config_module.rename(older, aliases) == key:
        cases.append((older, key, changed(flat[key])))
  return cases


CASES = alias_cases()


def test_the_method_flags_are_aliases():
  keys = {(old, new) for old, new, _ in CASES}
  for pair in [
      ('dynamics.masked_loss', 'masking.enabled'),
      ('dynamics.k_steps', 'masking.k_steps'),
      ('dynamics.alpha_strength', 'masking.alpha_strength'),
      ('dynamics.cross_episodes', 'masking.cross_episodes'),
      ('agent.use_intrinsic', 'intrinsic.enabled'),
      ('agent.intrinsic.scheduling_strategy',
       'intrinsic.scheduling_strategy'),
      ('agent.intrinsic.units', 'intrinsic.units'),
      ('replay.priosignal', 'priority.signal'),
      ('replay.cache_every', 'priority.cache_every')]:
    assert pair in keys, pair
  # Every intrinsic option is reachable by its agent.intrinsic name.
  assert {n for _, n, _ in CASES if n.startswith('intrinsic.')} == {
      f'intrinsic.{k}' for k in declared(intrinsic)['intrinsic']}


@pytest.mark.parametrize('old,new,value', CASES, ids=[c[0] for c in CASES])
def test_alias_from_command_line_and_block(old, new, value):
  text = str(value)
  assert parse([f'--{old}', text])[new] == value
  assert parse([f'--{old}={text}'])[new] == value
  # A block with the key dotted, and nested as a YAML block writes it.
  *parents, leaf = old.split('.')
  nested = {leaf: value}
  for part in reversed(parents):
    nested = {part: nested}
  for block in ({old: value}, nested):
    blocks = {**main.load_blocks(), 'mine': block}
    assert parse(['--configs', 'mine'], blocks)[new] == value
    # The command line still wins over the block.
    default = parse([])[new]
    assert parse(['--configs', 'mine', f'--{new}', str(default)],
                 blocks)[new] == default


def test_blocks_use_todays_names():
  aliases = {k: v for m in BUILTIN for k, v in m.ALIASES.items()}
  for name, block in main.load_blocks().items():
    for key in config_module._flat(block):
      assert config_module.rename(key, aliases) == key, (name, key)
  config = parse(['--configs', 'uncertainty_caching'])
  assert config.priority.signal == 'uncertainty'
  assert config.priority.cache_every == 2000
  config = parse(['--configs', 'xp_disagreement_slope_ema'])
  assert config.intrinsic.enabled and config.priority.signal == 'model'


def old_layout(logdir):
  """Rewrite the logdir's config.yaml with the keys' older names, as a run
  written before the extension namespaces has it."""
  path = logdir / 'config.yaml'
  data = yaml.YAML(typ='safe').load(path.read_text())
  masking_, intr, prio = (data.pop(k) for k in (
      'masking', 'intrinsic', 'priority'))
  data['dynamics'] = {'masked_loss': masking_.pop('enabled'), **masking_}
  data['agent']['use_intrinsic'] = intr.pop('enabled')
  data['agent']['intrinsic'] = intr
  data['replay']['priosignal'] = prio['signal']
  data['replay']['cache_every'] = prio['cache_every']
  with path.open('w') as f:
    yaml.YAML(typ='safe').dump(data, f)


def test_old_logdir_config(tmp_path):
  args = ['--configs', 'debug', '--task', 'dummy_image',
          '--intrinsic.enabled', 'True', '--intrinsic.units', '8',
          '--masking.k_steps', '1', '--priority.signal', 'model']
  logdir = tmp_path / 'run'
  main.write_config(parse(args), logdir)
  old_layout(logdir)
  text = (logdir / 'config.yaml').read_text()
  assert 'use_intrinsic: true' in text and 'intrinsic:\n  ' not in text
  # Read under today's names ...
  saved = config_module.load_logdir_config(logdir, parse(args))
  assert saved['intrinsic.enabled'] is True
  assert saved['intrinsic.units'] == 8
  assert saved['masking.k_steps'] == 1
  assert saved['priority.signal'] == 'model'
  assert not any(k.startswith(('dynamics.', 'agent.intrinsic'))
                 for k in saved)
  config = tools.load_config(logdir)
  assert config.masking.k_steps == 1 and config.intrinsic.units == 8
  # ... so that the same settings resume (a missing intrinsic.enabled would
  # read as the extension off) and other shapes are refused by their name.
  check_logdir(parse(args), logdir)
  for flags, key in [(['--intrinsic.units', '16'], 'intrinsic.units'),
                     (['--intrinsic.enabled', 'False'], 'intrinsic.enabled'),
                     (['--agent.intrinsic.layers', '3'], 'intrinsic.layers')]:
    with pytest.raises(ConfigError) as info:
      check_logdir(parse(args + flags), logdir)
    assert key in str(info.value)


def test_structural_rules_name_todays_keys():
  rules = main.structural_keys(parse(['--task', 'dummy_disc']))
  patterns = ' '.join(p for p, _ in rules)
  assert 'intrinsic' in patterns and 'agent\\.intrinsic' not in patterns
  assert 'use_intrinsic' not in patterns


def test_defaults_come_from_the_module():
  config = parse([])
  blocks = main.load_blocks()
  for module, spec in zip(BUILTIN, extensions.BUILTIN):
    space = extensions.short(spec)
    tree = declared(module)
    assert list(tree) == [space] and space not in blocks['defaults']
    assert dict(config[space]) == tree[space]
    # Every key carries a comment for --help.
    _, notes = usage.comments(module.DEFAULTS, root=None)
    keys = elements.Config(tree).flat
    assert set(keys) <= set(notes), set(keys) - set(notes)
  assert config.intrinsic.units == 1024
  assert (config.masking.enabled, config.intrinsic.enabled,
          config.priority.signal) == (False, False, 'none')


def test_classes_take_their_options_from_the_config():
  options = set(declared(intrinsic)['intrinsic']) - {'enabled'}
  # No second default that could disagree with DEFAULTS.
  assert set(intrinsic.Intrinsic.__annotations__) == options
  assert not options & set(intrinsic.Intrinsic._defaults)
  assert not {'size', 'layers', 'units'} & set(intrinsic.Ensemble._defaults)
  for cls in (masking.MaskedPixelLoss, priority.PrioritySignal):
    params = inspect.signature(cls.__init__).parameters.values()
    assert all(p.default is p.empty for p in params), cls
  # The ensemble built from the default config has DEFAULTS' width.
  for argv in ([], ['--configs', 'size12m'], ['--agent.intrinsic.units', '7']):
    config = parse(['--intrinsic.enabled', 'True'] + argv)
    view = elements.Config(extensions.views(config)['intrinsic'])
    agent = type('Agent', (), dict(
        dyn=type('Dyn', (), {'deter': 8})(), rew=None, act_space={}))()
    ext = intrinsic.install(agent, view)
    assert ext.members.units == config.intrinsic.units
    assert ext.members.size == config.intrinsic.ensemble_size
    assert ext.members.layers == config.intrinsic.layers
  assert parse(['--agent.intrinsic.units', '7']).intrinsic.units == 7
  assert intrinsic.install(agent, elements.Config(
      extensions.views(parse([]))['intrinsic'])) is None


def write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(textwrap.dedent(text))
  return str(path)


def test_outside_extension_declares_the_same_way(tmp_path):
  path = write(tmp_path / 'toy.py', TOY)
  config = parse(['--extensions', path])
  assert dict(config.toy) == {'enabled': True, 'scale': 0.5, 'units': 4}
  assert parse(['--extensions', path, '--probe.units', '8']).toy.units == 8
  assert parse([f'--extensions={path}', '--probe.units=8']).toy.units == 8
  blocks = {**main.load_blocks(), 'mine': {'probe': {'scale': 2.0}}}
  assert parse(['--extensions', path, '--configs', 'mine'],
               blocks).toy.scale == 2.0
  text, error = usage.render(['--help', 'toy', '--extensions', path],
                             main.load_blocks())
  assert error is None
  lines = text.splitlines()
  assert lines[0] == 'A linear reward probe on the model state.'
  at = lines.index('--toy.units 4')
  assert lines[at + 1].strip() == 'width of its hidden layer'
  assert '  --probe.* = --toy.*' in lines
  # The built-ins' keys and aliases show the same way.
  text, _ = usage.render(['--help', 'masking'], main.load_blocks())
  assert '--masking.enabled False' in text
  assert '--dynamics.masked_loss = --masking.enabled' in text
  text, _ = usage.render(['--help', 'agent.intrinsic'], main.load_blocks())
  assert '--intrinsic.units 1024' in text.splitlines()


def errmsg(argv):
  with pytest.raises(ConfigError) as info:
    parse(argv)
  return str(info.value)


def test_two_extensions_declaring_one_key(tmp_path):
  first = write(tmp_path / 'a' / 'toy.py', TOY)
  second = write(tmp_path / 'b' / 'toy.py', TOY)
  msg = errmsg(['--extensions', f'{first},{second}'])
  assert "'toy'" in msg and second in msg
  # An alias another extension declares, or that hides a key.
  other = write(tmp_path / 'dup_alias.py', '''
      DEFAULTS = """
      dup_alias:
        enabled: False  # on
      """
      ALIASES = {'dynamics.masked_loss': 'dup_alias.enabled'}
      ''')
  msg = errmsg(['--extensions', other])
  assert "'dynamics.masked_loss'" in msg and 'dreamerv3.masking' in msg
  hiding = write(tmp_path / 'hiding.py', '''
      DEFAULTS = """
      hiding:
        enabled: False  # on
      """
      ALIASES = {'replay.size': 'hiding.enabled'}
      ''')
  assert "'replay.size'" in errmsg(['--extensions', hiding])
  # A namespace that is not the module's name, or a core key.
  wrong = write(tmp_path / 'wrongns.py', '''
      DEFAULTS = """
      foo:
        bar: 1  # a key
      """
      ''')
  msg = errmsg(['--extensions', wrong])
  assert "'foo'" in msg and "'wrongns'" in msg
  core = write(tmp_path / 'run' / 'replay.py', '''
      DEFAULTS = """
      replay:
        extra: 1  # a key
      """
      ''')
  msg = errmsg(['--extensions', core])
  assert "'replay'" in msg and 'configs.yaml' in msg


def test_unknown_keys_are_named_as_typed():
  assert "'--agent.intrinsic.unitz'" in errmsg(['--agent.intrinsic.unitz',
                                                '3'])
  assert "'--dynamics.nope'" in errmsg(['--dynamics.nope', '3'])
  blocks = {**main.load_blocks(), 'mine': {'agent.intrinsic.unitz': 3}}
  with pytest.raises(ConfigError, match="'mine'.*agent.intrinsic.unitz"):
    parse(['--configs', 'mine'], blocks)


def test_unknown_key_exits_2(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
       '--masking.nope', '1', '--logdir', str(tmp_path / 'run')],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'masking.nope' in proc.stderr
  assert not (tmp_path / 'run').exists()
