"""Config parsing and logdir checks of dreamerv3/main.py (no JAX needed)."""

import elements
import pytest

from dreamerv3 import extensions, main
from dreamerv3.main import ConfigError, check_logdir, parse

# Published model sizes: deter, hidden, classes, CNN depth, MLP units.
SIZES = {
    'size1m': (512, 64, 4, 4, 64),
    'size12m': (2048, 256, 16, 16, 256),
    'size25m': (3072, 384, 24, 24, 384),
    'size50m': (4096, 512, 32, 32, 512),
    'size100m': (6144, 768, 48, 48, 768),
    'size200m': (8192, 1024, 64, 64, 1024),
    'size400m': (12288, 1536, 96, 96, 1536),
}


def keys_ending(config, suffix):
  return {k: v for k, v in config.flat.items() if k.endswith(suffix)}


def errmsg(argv, blocks=None):
  with pytest.raises(ConfigError) as info:
    parse(argv, blocks)
  return str(info.value)


# Blocks and overrides.

def test_defaults_only():
  config = parse([])
  blocks = main.load_blocks()
  # configs.yaml's defaults, and each extension's namespace from its module.
  spaces = {extensions.short(s) for s in extensions.BUILTIN}
  core = {k: v for k, v in config.flat.items() if k.split('.')[0] not in spaces}
  assert core == elements.Config(blocks['defaults']).flat
  assert not spaces & set(blocks['defaults'])
  assert config.script == 'train'


def test_later_block_overrides_earlier():
  small_last = parse(['--configs', 'size12m', 'size1m'])
  large_last = parse(['--configs', 'size1m', 'size12m'])
  assert small_last.agent.dyn.deter == 512
  assert large_last.agent.dyn.deter == 2048
  assert small_last.agent.enc.units == 64
  assert large_last.agent.enc.units == 256


def test_configs_flag_accepts_comma_list():
  config = parse(['--configs=debug,size1m'])
  assert config.agent.dyn.deter == 512
  assert config.batch_size == 4  # From debug, untouched by size1m.


def test_defaults_block_name_is_ignored():
  assert parse(['--configs', 'defaults', 'size1m']).flat == parse(
      ['--configs', 'size1m']).flat


def test_regex_key_sets_every_match():
  config = parse(['--configs', 'size12m'])
  units = keys_ending(config, '.units')
  depth = keys_ending(config, '.depth')
  # Every MLP and CNN in the agent, not just one of them.
  assert {'agent.enc.units', 'agent.dec.units', 'agent.rewhead.units',
          'agent.conhead.units', 'agent.policy.units',
          'agent.value.units'} <= set(units)
  assert set(units.values()) == {256}
  assert {'agent.enc.depth', 'agent.dec.depth'} <= set(depth)
  assert set(depth.values()) == {16}


def test_regex_key_leaves_similar_keys_alone():
  config = parse(['--configs', 'debug'])
  assert set(keys_ending(config, '.layers').values()) == {1}
  # '.*\.layers' must not touch the RSSM's imglayers/obslayers.
  assert config.agent.dyn.imglayers == 2
  assert config.agent.dyn.obslayers == 1


def test_regex_flag_on_command_line():
  config = parse(['--configs', 'debug', r'--.*\.units', '32'])
  assert set(keys_ending(config, '.units').values()) == {32}


@pytest.mark.parametrize('name', sorted(SIZES))
def test_size_blocks_have_published_values(name):
  deter, hidden, classes, depth, units = SIZES[name]
  config = parse(['--configs', name])
  assert config.agent.dyn.deter == deter
  assert config.agent.dyn.hidden == hidden
  assert config.agent.dyn.classes == classes
  assert set(keys_ending(config, '.depth').values()) == {depth}
  assert set(keys_ending(config, '.units').values()) == {units}
  # Size blocks change nothing else.
  base = parse([]).flat
  changed = {k for k, v in config.flat.items() if base[k] != v}
  assert all(k.startswith('agent.dyn.') or k.endswith(('.units', '.depth'))
             for k in changed), changed


def test_terminal_overrides_come_after_blocks():
  config = parse([
      '--configs', 'debug', '--run.train_ratio', '64', '--agent.opt.lr',
      '1e-4', '--batch_size', '8', '--env.size', '32,32'])
  assert config.run.train_ratio == 64.0
  assert isinstance(config.run.train_ratio, float)
  assert config.agent.opt.lr == pytest.approx(1e-4)
  assert config.batch_size == 8 and isinstance(config.batch_size, int)
  assert tuple(config.env.size) == (32, 32)
  # The rest of the debug block still applies.
  assert config.batch_length == 8
  assert config.agent.dyn.deter == 32


def test_terminal_override_beats_regex_block():
  config = parse(['--configs', 'size12m', '--agent.policy.units', '100'])
  assert config.agent.policy.units == 100
  assert config.agent.value.units == 256


def test_flag_value_forms():
  config = parse([
      '--seed=3', '--jax.jit', 'False', '--env.size', '48', '48',
      '--run.steps', '1e5', '--batch_size', '1e1'])
  assert config.seed == 3
  assert config.jax.jit is False
  assert tuple(config.env.size) == (48, 48)
  assert config.run.steps == 1e5
  assert config.batch_size == 10


def test_numeric_defaults_are_numbers():
  # YAML '5e6' style values must load as floats, not strings.
  config = parse(['--configs', 'debug'])
  for key in ('replay.size', 'run.steps', 'agent.opt.lr', 'agent.opt.eps',
              'agent.entropy', 'run.train_ratio'):
    assert isinstance(config.flat[key], float), key


def test_cartpole_block():
  config = parse(['--configs', 'cartpole'])
  assert config.task == 'gym_CartPole-v1'
  units = main.load_blocks()['cartpole'][r'.*\.units']
  assert set(keys_ending(config, '.units').values()) == {units}


@pytest.mark.parametrize('name', [
    k for k in main.load_blocks() if k != 'defaults'])
def test_every_block_applies_its_values(name):
  # Each literal key of the block ends up in the parsed config.
  block = parse([]).update(main.load_blocks()[name])
  config = parse(['--configs', name])
  assert config.flat == block.flat


# Bad inputs.

def test_unknown_block():
  msg = errmsg(['--configs', 'debug', 'size3m'])
  assert "'size3m'" in msg
  assert 'size12m' in msg  # Lists the available blocks.


def test_unknown_key():
  msg = errmsg(['--configs', 'debug', '--agent.dyn.detr', '64'])
  assert 'agent.dyn.detr' in msg


def test_unknown_top_level_key():
  assert 'batchsize' in errmsg(['--batchsize', '8'])


@pytest.mark.parametrize('argv,key,value', [
    (['--batch_size', 'abc'], 'batch_size', 'abc'),
    (['--batch_size', '1.5'], 'batch_size', '1.5'),
    (['--jax.jit', 'maybe'], 'jax.jit', 'maybe'),
    (['--run.train_ratio', 'fast'], 'run.train_ratio', 'fast'),
    (['--env.size', '32,abc'], 'env.size', 'abc'),
])
def test_wrong_type(argv, key, value):
  msg = errmsg(argv)
  assert key in msg
  assert value in msg


def test_unknown_script():
  # The run package owns the choice: checked with the other values.
  with pytest.raises(ConfigError) as info:
    main.check_values(parse(["--script", "trian"]))
  msg = str(info.value)
  assert "'trian'" in msg
  assert 'train_eval' in msg and 'eval_only' in msg


def test_block_with_unknown_key():
  blocks = {**main.load_blocks(), 'mine': {'agent.dyn.detr': 64}}
  msg = errmsg(['--configs', 'mine'], blocks)
  assert "'mine'" in msg and 'detr' in msg


def test_block_with_wrong_type():
  blocks = {**main.load_blocks(), 'mine': {'batch_size': 'abc'}}
  msg = errmsg(['--configs', 'mine'], blocks)
  assert "'mine'" in msg and 'batch_size' in msg and 'abc' in msg


def test_block_with_wrong_bool():
  blocks = {**main.load_blocks(), 'mine': {'jax': {'jit': 'maybe'}}}
  msg = errmsg(['--configs', 'mine'], blocks)
  assert 'jax.jit' in msg


# Logdir compatibility.

@pytest.fixture
def logdir(tmp_path):
  config = parse(['--configs', 'debug', '--task', 'dummy_vector'])
  main.write_config(config, tmp_path / 'run')
  return tmp_path / 'run'


def test_check_logdir_same_config_passes(logdir):
  check_logdir(parse(['--configs', 'debug', '--task', 'dummy_vector']), logdir)


def test_check_logdir_missing_config_passes(tmp_path):
  check_logdir(parse([]), tmp_path / 'fresh')
  assert not (tmp_path / 'fresh').exists()


def test_check_logdir_structural_change_raises(logdir):
  config = parse(
      ['--configs', 'debug', '--task', 'dummy_vector', '--agent.dyn.deter',
       '64'])
  with pytest.raises(ConfigError) as info:
    check_logdir(config, logdir)
  msg = str(info.value)
  assert 'agent.dyn.deter' in msg
  assert '32' in msg and '64' in msg
  assert str(logdir) in msg


def test_check_logdir_lists_every_structural_key(logdir):
  config = parse([
      '--configs', 'debug', '--task', 'dummy_disc', '--env.size', '32,32',
      '--agent.policy.units', '8', '--run.train_ratio', '64'])
  with pytest.raises(ConfigError) as info:
    check_logdir(config, logdir)
  msg = str(info.value)
  for key in ('task', 'env.size', 'agent.policy.units'):
    assert key in msg
  assert 'train_ratio' not in msg


def test_check_logdir_env_shape_options(tmp_path):
  config = parse(['--configs', 'atari100k', 'debug'])
  main.write_config(config, tmp_path / 'run')
  for flag, value in [('--env.atari100k.gray', 'True'),
                      ('--env.atari100k.actions', 'all')]:
    changed = parse(['--configs', 'atari100k', 'debug', flag, value])
    with pytest.raises(ConfigError, match=flag[2:].replace('.', r'\.')):
      check_logdir(changed, tmp_path / 'run')
  # Sticky actions change no shape: resuming with another value is fine.
  check_logdir(parse(['--configs', 'atari100k', 'debug',
                      '--env.atari100k.sticky', '0.25']), tmp_path / 'run')


@pytest.mark.parametrize('flag,value', [
    ('--run.train_ratio', '64'), ('--run.steps', '1e3'),
    ('--script', 'eval_only'), ('--seed', '1'), ('--agent.opt.lr', '1e-3'),
    ('--run.save_every', '10'), ('--batch_size', '8'),
])
def test_check_logdir_non_structural_change_passes(logdir, flag, value):
  config = parse(
      ['--configs', 'debug', '--task', 'dummy_vector', flag, value])
  check_logdir(config, logdir)


def test_values_that_cannot_work_are_rejected():
  for args, culprit in [
      (['--env.size', '32'], 'env.size'),
      (['--replay.chunksize', '8', '--batch_length', '8'], 'chunksize'),
      (['--logger.outputs', 'terminal,nope'], "'nope'"),
      (['--batch_size', '0'], 'batch_size'),
      (['--priority.signal', 'nope'], "priority.signal 'nope'"),
      (['--replay.fracs.recency', '-1'], 'replay.fracs.recency'),
      (['--replay.fracs.uniform', '0'], 'replay.fracs'),
      (['--replay.prio.initial', 'big'], 'replay.prio.initial'),
      (['--replay.prio.maxfrac', '2'], 'replay.prio.maxfrac'),
      (['--configs', 'uncertainty', '--priority.signal', 'none'],
       'priority.signal'),
      (['--priority.cache_every', '10'], 'priority.cache_every')]:
    config = main.parse(args)
    with pytest.raises(main.ConfigError) as e:
      main.check_values(config)
    assert culprit in str(e.value), (args, str(e.value))


def _drop_keys(logdir, *keys):
  """Rewrite the logdir's config as an older version wrote it, without
  the given (nested) keys."""
  import ruamel.yaml as yaml
  path = logdir / 'config.yaml'
  data = yaml.YAML(typ='safe').load(path.read_text())
  for key in keys:
    *parents, leaf = key.split('.')
    node = data
    for part in parents:
      node = node[part]
    del node[leaf]
  with path.open('w') as f:
    yaml.YAML(typ='safe').dump(data, f)


def test_check_logdir_twohot_layout_of_older_runs(tmp_path):
  # A logdir written before the bin layout was recorded was trained with
  # the symlog layout: resuming it with symexp would silently change what
  # its reward and value heads mean, so it is refused ...
  args = ['--configs', 'debug', '--task', 'dummy_vector']
  main.write_config(parse(args), tmp_path / 'run')
  _drop_keys(tmp_path / 'run', 'agent.rewhead.layout', 'agent.value.layout')
  with pytest.raises(ConfigError) as info:
    check_logdir(parse(args), tmp_path / 'run')
  msg = str(info.value)
  for key in ('agent.rewhead.layout', 'agent.value.layout'):
    assert f"{key}: logdir has 'symlog' (written before the key existed), " \
        "now 'symexp'" in msg
  # ... and resumes with its own layout when asked for.
  check_logdir(parse(args + ['--agent.rewhead.layout', 'symlog',
                             '--agent.value.layout', 'symlog']),
               tmp_path / 'run')


def test_check_logdir_skips_structural_keys_added_since(tmp_path):
  args = ['--configs', 'debug', '--task', 'dummy_vector']
  main.write_config(parse(args), tmp_path / 'run')
  _drop_keys(tmp_path / 'run', 'agent.dec.fast', 'replay.fracs.recency')
  check_logdir(parse(args), tmp_path / 'run')
