"""The extension interface of the agent: one module per extension.

Built-in extensions are listed in BUILTIN; more modules plug in without
editing any file with `--extensions NAME_OR_PATH[,...]` (an importable
module name or the path of a .py file). An extension module declares, in
one place:
  CONFIG            the config paths it reads (whole sub-trees, usually
                    its namespace, e.g. ('masking',)); install() gets a
                    config holding just these, under the same paths
  DEFAULTS          (optional) YAML text of its config namespace: one
                    top-level key, the module's short name (short()), with
                    every key's default and a one-line `#` comment that
                    `main.py --help NAME` shows; the only place its defaults
                    live (classes take them from the config)
  ALIASES           (optional) {older key or key prefix: key in its
                    namespace}: the names the method's paper and code use,
                    accepted wherever a key is given (command line, config
                    blocks, an older logdir's config.yaml); the longest
                    matching prefix wins
  RANGES, CHOICES, check(config), check_spaces(config, obs_space)
                    its config checks, run before the logdir is touched (see
                    dreamerv3/validate.py)
  STRUCTURAL        (pattern, legacy) pairs of its config keys that shape
                    parameters: a logdir trained with other values cannot
                    resume; `legacy` is what a key missing from an older
                    logdir's config meant (None: not compared then)
  install(agent, config) -> Extension or None
                    called by Dreamer.__init__ (before its optimizer is
                    built); None when the extension is disabled, so a
                    disabled extension adds no parameters, no loss terms and
                    no operations.

An Extension object fills any of the seams below; the defaults leave the
plain agent unchanged. Extensions apply in the order of BUILTIN, then of
--extensions.
  name              prefix of its metrics and key of its host inputs: its
                    namespace (the module's short name)
  modules           trainable ninjax modules; the agent's optimizer trains
                    them together with the agent's own networks
  loss_scales       {loss name: scale} of the terms losses() returns
  host              HostState or None: per-run state kept on the host (a
                    schedule) whose inputs() enter the jitted train step as
                    input arrays, so new values never recompile; the run
                    loop feeds it env steps and checkpoints it
  recon_weights(obs) -> ({image key: per-pixel weights}, metrics) or None
  losses(obs, entries, feat, prevact, inputs) -> (losses, metrics): extra
                    world-model terms on the replayed posterior sequence
  imag_reward(states, actions, feat, reward, inputs) -> (reward, metrics):
                    the reward of the imagined rollout, given the imagined
                    states, the actions taken and the reward so far (the
                    reward head's prediction, or the previous extension's)
  loss_weights(inputs) -> {agent loss name: multiplier}
  step_outputs(signals) -> [B, T'] per-step values of the last T' trained
                    steps for the host, or None; `signals` holds the train
                    step's per-step quantities (Dreamer.loss); the step
                    returns them as outs[name] = {'stepid', 'value'}
  after_train()     after each optimizer step (e.g. EMA copies)
  host_work(agent, replay, prepare) -> HostWork or None: the host side of
                    the train loop (what to do with the step's outputs,
                    periodic work such as buffer-wide refreshes); `agent`
                    is the jitted agent, `prepare(batch)` completes a
                    replay batch for it
`inputs` is the extension's own dict from host.inputs(), as traced arrays.
"""

import importlib
import importlib.util
import os
import sys

import elements
import ruamel.yaml as yaml

# Built-in extension modules, in the order their seams apply.
BUILTIN = ('dreamerv3.masking', 'dreamerv3.intrinsic', 'dreamerv3.priority')


def specs(config=None):
  """The extension modules of a config: the built-ins, then the config's
  comma-separated `extensions`."""
  extra = config.get('extensions', '') if config is not None else ''
  return BUILTIN + tuple(s.strip() for s in extra.split(',') if s.strip())


def load(spec):
  """An extension module by import name or by the path of a .py file."""
  if not spec.endswith('.py'):
    return importlib.import_module(spec)
  path = os.path.abspath(os.path.expanduser(spec))
  name = 'dreamer_extension_' + short(path)
  if name not in sys.modules:
    if not os.path.exists(path):
      raise FileNotFoundError(f'No extension module at {path}')
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
  return sys.modules[name]


def short(spec):
  """The key of an extension's config view: its module's last name."""
  base = os.path.basename(spec)
  return base[:-3] if base.endswith('.py') else base.rsplit('.', 1)[-1]


def modules(config=None):
  return [load(spec) for spec in specs(config)]


def defaults(module):
  """{namespace: default tree} that the module declares (DEFAULTS)."""
  text = getattr(module, 'DEFAULTS', '')
  if not isinstance(text, str):
    raise TypeError(f'{module.__name__}.DEFAULTS must be YAML text, got '
                    f'{type(text).__name__}')
  return yaml.YAML(typ='safe').load(text) or {}


def structural(config=None):
  """The STRUCTURAL rules of all extension modules."""
  return tuple(rule for module in modules(config)
               for rule in getattr(module, 'STRUCTURAL', ()))


def views(config):
  """{short name: the config paths the extension reads (its CONFIG)}."""
  out = {}
  for spec, module in zip(specs(config), modules(config)):
    tree = {}
    for path in getattr(module, 'CONFIG', ()):
      *parents, leaf = path.split('.')
      node = tree
      for part in parents:
        node = node.setdefault(part, {})
      value = config[path]
      node[leaf] = dict(value) if isinstance(value, elements.Config) else value
    out[short(spec)] = tree
  return out


def install(agent, specs_, views_):
  """The enabled extensions of the agent, in order."""
  exts = []
  for spec in specs_:
    # elements.Config drops empty sub-trees: no CONFIG, no view.
    name = short(spec)
    view = views_[name] if name in views_ else elements.Config({})
    ext = load(spec).install(agent, view)
    if ext is not None:
      exts.append(ext)
  return exts


class Extension:
  """Base class: every seam defaults to the plain agent's behaviour."""

  name = ''
  modules = ()
  loss_scales = {}
  host = None

  def recon_weights(self, obs):
    return None

  def losses(self, obs, entries, feat, prevact, inputs):
    return {}, {}

  def imag_reward(self, states, actions, feat, reward, inputs):
    return reward, {}

  def loss_weights(self, inputs):
    return {}

  def step_outputs(self, signals):
    return None

  def after_train(self):
    pass

  def host_work(self, agent, replay, prepare):
    return None


class HostState:
  """Per-run host state of an extension. on_step(tran, worker) sees every
  env step (registered with the driver); inputs() -> {name: float32 array}
  with fixed shapes; save()/load() go into the run's checkpoint."""

  def on_step(self, tran, worker):
    pass

  def inputs(self):
    return {}

  def save(self):
    return {}

  def load(self, data):
    pass


class HostWork:
  """The host side of an extension in the train loop (one for all
  members). outputs(outs) gets every train step's outputs as NumPy (with a
  leading member axis for several seeds; the extension reads its own key);
  updated(updates) runs after each update with the update count; stats()
  -> metrics since the last call."""

  def outputs(self, outs):
    pass

  def updated(self, updates):
    pass

  def stats(self):
    return {}


class Hosts:
  """The host states of the agent's extensions, by extension name; empty
  (falsy) when no extension keeps one."""

  def __init__(self, exts):
    self.hosts = {e.name: e.host for e in exts if e.host is not None}

  def __len__(self):
    return len(self.hosts)

  def on_step(self, tran, worker):
    for host in self.hosts.values():
      host.on_step(tran, worker)

  def inputs(self):
    return {name: host.inputs() for name, host in self.hosts.items()}

  def save(self):
    return {name: host.save() for name, host in self.hosts.items()}

  def load(self, data):
    for name, host in self.hosts.items():
      host.load(data[name])
