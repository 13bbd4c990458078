"""Config validation: every numeric key set to 0, -1, nan and inf either is
refused with a message naming the key, or builds what consumes it."""

import math

import jax
import pytest

from dreamerv3 import main, validate
from dreamerv3.agent import Dreamer
from tests.helpers import model_spaces, train_shapes, zeros_batch

ARGS = ['--configs', 'debug', '--task', 'dummy_image']
VALUES = ('0', '-1', 'nan', 'inf')


def numeric_keys():
  config = main.parse(ARGS)
  return sorted(k for k, v in config.flat.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool))


def validated(argv):
  """The config after every check main runs before the logdir, or the
  ConfigError message."""
  try:
    config = main.parse(argv)
    main.check_values(config)
    env = main.make_env(config, 0)
    obs_space = env.obs_space
    env.close()
    validate.check_spaces(config, obs_space)
    validate.check_devices(config, len(jax.devices()))
  except main.ConfigError as e:
    return None, str(e)
  return config, None


def trace_agent(config):
  """Builds the agent's modules and traces one train step abstractly
  (shapes only, nothing compiled or run)."""
  obs_space, act_space = model_spaces(config)
  model = Dreamer(obs_space, act_space, main.agent_config(config),
                  name='agent')
  train_shapes(model, zeros_batch(model))


def fuzz_numeric_keys(trace_every):
  """Sets each numeric key to each of VALUES; a refusal must name the key
  in one line, anything accepted must build what consumes it (for the
  agent: every trace_every-th accepted case, as tracing takes seconds)."""
  keys = numeric_keys()
  assert len(keys) > 80
  refused, traced, accepted = 0, 0, 0
  for key in keys:
    for value in VALUES:
      config, error = validated(ARGS + [f'--{key}', value])
      if error is not None:
        assert key in error, (key, value, error)
        assert '\n' not in error, error
        refused += 1
        continue
      assert math.isfinite(config[key]), (key, value)
      if key.startswith(('agent.', 'batch_', 'replay_context', 'masking.',
                         'intrinsic.')):
        accepted += 1
        if accepted % trace_every == 0:
          trace_agent(config)
          traced += 1
      elif key.startswith('env.'):
        env = main.make_env(config, 0)
        env.step({'reset': True})
        env.close()
      elif key.startswith('replay.'):
        main.make_replay(config, 'replay', directory=False)
  assert refused > 150 and traced >= accepted // trace_every, (
      refused, traced)


def test_every_numeric_key_is_checked():
  fuzz_numeric_keys(trace_every=12)


@pytest.mark.slow
def test_every_numeric_key_is_checked_all_traced():
  fuzz_numeric_keys(trace_every=1)


@pytest.mark.parametrize('args,culprit', [
    (['--run.train_ratio', 'nan'], 'run.train_ratio'),
    (['--replay.size', '0'], 'replay.size'),
    (['--replay.size', '100', '--replay.chunksize', '64'], 'replay.size'),
    (['--run.steps', '-1'], 'run.steps'),
    (['--agent.dyn.deter', '30'], 'agent.dyn.deter'),
    (['--env.size', '60,60'], 'agent.enc.mults'),
    (['--task', 'dummy_vector', '--masking.enabled', 'True'],
     'masking.enabled'),
    (['--jax.train_devices', '9'], 'jax.train_devices'),
    (['--seed', '1.5'], 'seed'),
    (['--agent.policy.maxstd', '0.05'], 'agent.policy.maxstd'),
])
def test_bad_values_name_the_key(args, culprit):
  config, error = validated(ARGS + args)
  assert config is None and culprit in error, error


def test_batch_not_divisible_by_devices():
  config = main.parse(ARGS + ['--batch_size', '3'])
  with pytest.raises(main.ConfigError, match='batch_size.*3.*2 train'):
    validate.check_devices(config, 2)
  validate.check_devices(config, 1)
