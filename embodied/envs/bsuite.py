"""Behaviour Suite (bsuite) as bsuite_<experiment>/<id>, e.g. bsuite_catch/0.

The id picks the experiment's setting from bsuite's sweep. Settings with a
'seed' entry get the run's env seed instead, so that env workers differ.
Observations: one float32 'vector' (flattened); actions: int32 'action' in
[0, n). dm_env semantics: a last step with discount 0 is a termination
(is_last and is_terminal), with another discount a truncation (is_last
only).

The mnist experiments (mnist, mnist_noise, mnist_scale) would download MNIST
at run time into bsuite's cache folder (MNIST_DIR). Runs do not download:
without internet that fails (or waits on a network timeout) in every env
worker, after the run has started. make() checks the cache by name before
bsuite.load() and, if a file is missing, raises MissingPackageError saying
how to fill it; with a filled cache these tasks work offline.
"""

import os

import elements
import numpy as np

from . import MissingPackageError, OptionError, UnknownTaskError
from .from_dm import FromDM

INSTALL = 'bsuite tasks need bsuite: pip install -r requirements-envs.txt'

# Where bsuite.utils.datasets.load_mnist() caches MNIST (its default
# directory), and the files it downloads when one is missing.
MNIST_DIR = '/tmp/mnist'
MNIST_FILES = (
    'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
    't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


def make(name, *, seed=0, size=None, **kwargs):
  del size  # bsuite observations are vectors.
  if kwargs:
    raise OptionError(
        f'Unknown option env.bsuite.{sorted(kwargs)[0]}: bsuite takes none')
  try:
    import bsuite
    from bsuite import sweep
  except ImportError as e:
    raise MissingPackageError(f'{INSTALL} ({e})') from None
  if name not in sweep.SETTINGS:
    experiment = name.split('/')[0]
    ids = [k.split('/')[1] for k in sweep.SETTINGS
           if k.split('/')[0] == experiment]
    if ids:
      raise UnknownTaskError(
          f"Unknown task 'bsuite_{name}': bsuite's {experiment} has ids "
          f"{ids[0]} to {ids[-1]}")
    experiments = sorted({k.split('/')[0] for k in sweep.SETTINGS})
    raise UnknownTaskError(
        f"Unknown task 'bsuite_{name}': expected bsuite_<experiment>/<id> "
        f"with experiment one of {', '.join(experiments)} (e.g. "
        "bsuite_catch/0)")
  experiment = name.split('/')[0]
  if experiment.startswith('mnist'):
    missing = [f for f in MNIST_FILES
               if not os.path.isfile(os.path.join(MNIST_DIR, f))]
    if missing:
      raise MissingPackageError(
          f"Task 'bsuite_{name}' downloads MNIST at run time, which cannot "
          f'happen here: {missing[0]} is not in {MNIST_DIR}. Fill that cache '
          'once with internet access (python -c "from bsuite.utils import '
          'datasets; datasets.load_mnist()") or copy the MNIST .gz files '
          'there')
  settings = dict(sweep.SETTINGS[name])
  if 'seed' in settings:
    settings['seed'] = seed
  env = bsuite.load(experiment, settings)
  return BSuite(env)


class BSuite(FromDM):
  """Adapts any dm_env.Environment with an array observation (flattened to
  one float vector) and a discrete (DiscreteArray) action."""

  def __init__(self, env):
    spec = env.observation_spec()
    if not hasattr(spec, 'shape'):
      raise NotImplementedError(
          f'BSuite needs an array observation spec, got {spec}')
    if not hasattr(env.action_spec(), 'num_values'):
      raise NotImplementedError(
          f'BSuite needs a discrete action spec, got {env.action_spec()}')
    super().__init__(env)
    self._size = int(np.prod(spec.shape))

  @property
  def num_episodes(self):
    """Episodes that bsuite's analysis expects the experiment to run."""
    return getattr(self._env, 'bsuite_num_episodes', None)

  def _spaces(self):
    return {'vector': elements.Space(np.float32, (self._size,))}

  def _observe(self, timestep):
    return {'vector': np.asarray(
        timestep.observation, np.float32).reshape(self._size)}
