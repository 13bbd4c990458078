"""The per-step priority signal of prioritized replay.

Uncertainty-based prioritized replay and DreamerV3-XP weigh replayed items
by what the model still gets wrong. With `replay.priosignal` other than
none, every train step returns, for each trained step, one of
  uncertainty   the unclipped dynamics KL (the prior's surprise);
  model         dynamics + representation KL, both unclipped;
  recon         the reconstruction loss;
  value         |critic prediction - its replay lambda-return| (known for
                all but the last step, which repeats the one before).

How replay extensions plug in, end to end:
  1. this extension fills the agent's `priority` seam; the train step
     returns outs['priority'] = {'stepid', 'value'};
  2. the run loop's Learner (embodied/run/common.py) hands them to
     replay.prioritize();
  3. the `priority` sampler of the sampler registry
     (embodied/core/samplers.py, `replay.fracs.priority`, `replay.prio.*`)
     turns per-step values into item priorities and samples by them;
  4. with replay.cache_every N, embodied/run/priorities.py recomputes every
     item's uncertainty from the agent's uncertainty() every N train steps.
A new signal is one more entry in SIGNALS; a new way to sample is one more
sampler class in the registry.
"""

import jax
import jax.numpy as jnp

from .extensions import Extension

CONFIG = ('replay.priosignal',)
SIGNALS = {
    'uncertainty': lambda s: s['dyn_kl'],
    'model': lambda s: s['dyn_kl'] + s['rep_kl'],
    'recon': lambda s: s['recon'],
    'value': lambda s: s['value_error'],
}
CHOICES = {'replay.priosignal': ('none', *SIGNALS)}
RANGES = ((r'replay\.cache_every', 'int', 0, None),)


class PrioritySignal(Extension):

  name = 'priority'

  def __init__(self, signal):
    self.signal = signal

  def priority(self, signals):
    value = SIGNALS[self.signal](signals)
    return jax.lax.stop_gradient(value).astype(jnp.float32)


def check(config):
  replay = config.replay
  priority = replay.fracs.get('priority', 0) > 0
  if priority and replay.priosignal == 'none' and not replay.cache_every:
    return ('replay.fracs.priority > 0 needs replay.priosignal (or '
            'replay.cache_every): without one no priority is ever updated.')
  if replay.cache_every and not priority:
    return ('replay.cache_every refreshes priorities, which only matter with '
            'replay.fracs.priority > 0.')
  return None


def install(agent, config):
  signal = config.replay.priosignal
  return None if signal == 'none' else PrioritySignal(signal)
