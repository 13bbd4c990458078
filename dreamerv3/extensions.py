"""The extension interface of the agent: one module per extension.

An extension module (listed in MODULES) declares, in one place:
  STRUCTURAL        (pattern, legacy) pairs of its config keys that shape
                    parameters: a logdir trained with other values cannot
                    resume; `legacy` is what a key missing from an older
                    logdir's config meant (None: such a logdir is not
                    compared on it). main.structural_keys collects them.
  check(config)     checks on the full config, run by main before the logdir
                    is touched; returns an error message naming the key, or
                    None.
  install(agent, config) -> Extension or None
                    called by Dreamer.__init__ (before its optimizer is
                    built) with the agent's sub-config; None when the
                    extension is disabled, so a disabled extension adds no
                    parameters, no loss terms and no operations.

An Extension object fills any of the seams below; the defaults leave the
plain agent unchanged. Extensions apply in the order of MODULES.
  name              prefix of its metrics and key of its host inputs
  modules           trainable ninjax modules; the agent's optimizer trains
                    them together with the agent's own networks
  loss_scales       {loss name: scale} of the terms losses() returns
  host              HostState or None: per-run state kept on the host (a
                    schedule) whose inputs() enter the jitted train step as
                    input arrays, so new values never recompile
  recon_weights(obs) -> ({image key: per-pixel weights}, metrics) or None
  losses(obs, entries, feat, prevact, inputs) -> (losses, metrics): extra
                    world-model terms on the replayed posterior sequence
  imag_reward(states, actions, feat, reward, inputs) -> (reward, metrics):
                    the reward of the imagined rollout, given the imagined
                    states, the actions taken and the reward so far (the
                    reward head's prediction, or the previous extension's)
  loss_weights(inputs) -> {agent loss name: multiplier}
  after_train()     after each optimizer step (e.g. EMA copies)
`inputs` is the extension's own dict from host.inputs(), as traced arrays.
"""

import importlib

# Extension modules, in the order their seams apply.
MODULES = ('dreamerv3.masking', 'dreamerv3.intrinsic')


def modules():
  return [importlib.import_module(name) for name in MODULES]


def structural():
  """The STRUCTURAL rules of all extension modules."""
  return tuple(rule for module in modules()
               for rule in getattr(module, 'STRUCTURAL', ()))


def check(config):
  """The first error message of the extension modules' checks, or None."""
  for module in modules():
    error = module.check(config)
    if error:
      return error
  return None


def install(agent, config):
  """The enabled extensions of the agent, in order."""
  exts = [module.install(agent, config) for module in modules()]
  return [ext for ext in exts if ext is not None]


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

  def after_train(self):
    pass


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
