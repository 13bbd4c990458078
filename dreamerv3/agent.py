"""The DreamerV3 agent: world model, actor and critic trained in imagination.

Extensions (dreamerv3/extensions.py, one module each) fill named seams:
per-pixel image loss weights, extra world-model losses and their trainable
modules, the reward of imagined rollouts (given imagined states and
actions), multipliers of the agent's own loss terms, the per-step replay
priority signal, and host state fed into the jitted train step as
`inputs`. With every extension disabled, the loss, parameters and random
draws are those of the plain agent.
"""

import elements
import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np

import embodied.jax.functional as fn
from embodied.core import video
from embodied.jax import nets, outs
from embodied.jax.opt import Optimizer

from . import extensions, rssm

f32 = jnp.float32
sg = jax.lax.stop_gradient
# Config keys that shape parameters or their meaning: a logdir trained with
# other values cannot resume. Each maps to what the key meant when missing
# from an older logdir's config (None: such a logdir is not compared on it).
STRUCTURAL = (
    (r'agent\.(rewhead|value)\.layout', 'symlog'),
    (r'agent\.dec\.image_dist', 'mse'),
    (r'agent\.dec\.bspace', 0),
    (r'agent\.(enc|dec|dyn|rewhead|conhead|policy|value)\..*', None),
    (r'replay_context', None),
)

# Config checks (dreamerv3/validate.py) of the agent's keys.
RANGES = (
    (r'agent\.imag_length', 'int', 1, None),
    (r'agent\.imag_last|agent\.opt\.warmup', 'int', 0, None),
    (r'agent\.horizon', 'number', 1, None),
    (r'agent\.(lam|slow_rate)|agent\.retnorm\.(rate|perclo|perchi)',
     'number', 0, 1),
    (r'agent\.opt\.beta[12]', 'number', 0, 0.999999),
    (r'agent\.\w+\.(units|depth|kernel)', 'int', 1, None),
    (r'agent\.dyn\.(deter|hidden|stoch|classes|blocks)', 'int', 1, None),
    (r'agent\.dec\.bspace', 'int', 0, None),
    (r'agent\.\w+\.(layers|imglayers|obslayers|dynlayers)', 'int', 0, None),
    (r'agent\.\w+\.bins', 'int', 2, None),
    (r'agent\.\w+\.unimix', 'number', 0, 1),
    (r'agent\.policy\.(minstd|maxstd)', 'number', 1e-6, None),
)
CHOICES = {
    'agent.dec.image_dist': ('mse', 'bernoulli'),
    'agent.rewhead.layout': outs.TWOHOT_LAYOUTS,
    'agent.value.layout': outs.TWOHOT_LAYOUTS,
    'agent.rewhead.kind': ('twohot',),
    'agent.value.kind': ('twohot',),
    'agent.conhead.kind': ('binary',),
}
NETS = ('enc', 'dec', 'dyn', 'rewhead', 'conhead', 'policy', 'value')


def check(config):
  c = config.agent
  for net in NETS:
    if c[net].act not in nets.ACTS:
      return (f"Unknown agent.{net}.act '{c[net].act}': choose from "
              f"{', '.join(nets.ACTS)}")
    if c[net].norm not in nets.NORMS:
      return (f"Unknown agent.{net}.norm '{c[net].norm}': choose from "
              f"{', '.join(nets.NORMS)}")
  if c.dyn.deter % c.dyn.blocks:
    return (f'agent.dyn.deter ({c.dyn.deter}) must be divisible by '
            f'agent.dyn.blocks ({c.dyn.blocks})')
  if c.policy.maxstd < c.policy.minstd:
    return (f'agent.policy.maxstd ({c.policy.maxstd}) must be at least '
            f'agent.policy.minstd ({c.policy.minstd})')
  if c.retnorm.perclo >= c.retnorm.perchi:
    return (f'agent.retnorm.perclo ({c.retnorm.perclo}) must be below '
            f'agent.retnorm.perchi ({c.retnorm.perchi})')
  return None


def check_spaces(config, obs_space):
  for key in rssm.image_keys(obs_space):
    height, width = obs_space[key].shape[:2]
    for net in ('enc', 'dec'):
      stages = len(config.agent[net].mults)
      if height % 2 ** stages or width % 2 ** stages:
        return (f"The image '{key}' is {height}x{width} but agent.{net}.mults "
                f'has {stages} stages, which halve it {stages} times: choose '
                f'env.size divisible by {2 ** stages} or fewer stages.')
  dec, deter = config.agent.dec, config.agent.dyn.deter
  channels = dec.depth * dec.mults[-1] if dec.mults else 0
  if rssm.image_keys(obs_space) and dec.bspace and (
      deter % dec.bspace or channels % dec.bspace):
    return (f'agent.dec.bspace ({dec.bspace}) must divide agent.dyn.deter '
            f'({deter}) and the first channel count of the image decoder, '
            f'agent.dec.depth * mults[-1] ({channels}), or be 0')
  return None


class Head(nj.Module):
  """MLP followed by an output distribution."""

  kind: str = 'mse'
  layers: int = 1
  units: int = 1024
  act: str = 'silu'
  norm: str = 'rms'
  outscale: float = 1.0
  bins: int = 255
  layout: str = 'symexp'  # two-hot bin layout (outs.TwoHot)
  unimix: float = 0.01
  minstd: float = 0.1
  maxstd: float = 1.0

  def __init__(self, space=None):
    self.space = space
    self.mlp = nets.MLP(layers=self.layers, units=self.units, act=self.act,
                        norm=self.norm, name='mlp')

  def __call__(self, feat):
    return self.dist(self.mlp(feat))

  def dist(self, x):
    """The output layer and distribution on the MLP's features x."""
    if self.kind == 'twohot':
      logits = self.sub('out', nets.Linear, units=self.bins,
                        outscale=self.outscale)(x)
      return outs.TwoHot(
          logits, outs.twohot_bins(self.bins, self.layout), self.layout)
    if self.kind == 'binary':
      logit = self.sub('out', nets.Linear, units=1, outscale=self.outscale)(x)
      return outs.Binary(logit[..., 0])
    if self.kind == 'categorical':
      logits = self.sub('out', nets.Linear, units=int(self.space.classes),
                        outscale=self.outscale)(x)
      return outs.Categorical(logits, self.unimix)
    if self.kind == 'bounded_normal':
      size = self.space.shape[0]
      x = self.sub('out', nets.Linear, units=2 * size, outscale=self.outscale)(x)
      return outs.BoundedNormal(x[..., :size], x[..., size:], self.minstd,
                                self.maxstd)
    raise ValueError(f"Unknown head kind '{self.kind}'")


class Policy(nj.Module):
  """One action head per action key; joint log-probs and entropies."""

  def __init__(self, act_space, **head):
    self.act_space = act_space
    self.heads = {}
    for key, space in sorted(act_space.items()):
      if space.discrete:
        if space.shape != ():
          raise ValueError(
              f"Discrete action '{key}' must be a scalar, got {space.shape}")
        kind = 'categorical'
      else:
        if len(space.shape) != 1:
          raise ValueError(
              f"Continuous action '{key}' must be a vector, got {space.shape}")
        kind = 'bounded_normal'
      self.heads[key] = Head(space, kind=kind, **head, name=f'head_{key}')

  def __call__(self, feat):
    return {k: h(feat) for k, h in self.heads.items()}


class Normalize(nj.Module):
  """EMA of the lo-hi percentile range of returns; the scale is floored so
  small returns are not amplified."""

  rate: float = 0.01
  limit: float = 1.0
  perclo: float = 0.05
  perchi: float = 0.95

  def __call__(self, x, update=True):
    lo = self.value('lo', jnp.zeros, (), f32)
    hi = self.value('hi', jnp.zeros, (), f32)
    if update:
      x = sg(x).reshape(-1).astype(f32)
      lo = self.write('lo', (1 - self.rate) * lo +
                      self.rate * jnp.percentile(x, 100 * self.perclo))
      hi = self.write('hi', (1 - self.rate) * hi +
                      self.rate * jnp.percentile(x, 100 * self.perchi))
    return jnp.maximum(self.limit, hi - lo)


def _check_scales(losses, scales):
  """Every loss term has a scale and every scale a term, as the reference
  asserts: a renamed or forgotten term would otherwise train silently at
  the wrong weight or not at all."""
  for key in losses:
    if key not in scales:
      raise KeyError(f'agent.loss_scales has no scale for the loss term '
                     f"'{key}': add agent.loss_scales.{key}")
  for key in scales:
    if key not in losses:
      raise KeyError(f'agent.loss_scales.{key} scales no loss term: the '
                     f'terms are {", ".join(sorted(losses))}')


class Dreamer(nj.Module):

  def __init__(self, obs_space, act_space, config):
    self.config = c = config
    self.obs_space = obs_space
    self.act_space = act_space
    self.enc = rssm.Encoder(obs_space, **c.enc, name='enc')
    self.dyn = rssm.RSSM(act_space, **c.dyn, name='dyn')
    self.dec = rssm.Decoder(obs_space, c.dyn.deter, **c.dec, name='dec')
    self.rew = Head(**c.rewhead, name='rew')
    self.con = Head(**c.conhead, name='con')
    self.pol = Policy(act_space, **c.policy, name='pol')
    self.val = Head(**c.value, name='val')
    self.slowval = Head(**c.value, name='slowval')
    self.retnorm = Normalize(**c.retnorm, name='retnorm')
    # Extensions first: the optimizer trains their modules too.
    self.exts = extensions.install(self, c.extensions, c.extension_views)
    self.opt = Optimizer(
        [self.enc, self.dyn, self.dec, self.rew, self.con, self.pol,
         self.val] + [m for e in self.exts for m in e.modules],
        **c.opt, name='opt')
    # Per-run host state of the extensions (schedules): the run loop feeds
    # it env steps and checkpoints it; its inputs() enter train().
    self.host = extensions.Hosts(self.exts)

  def ext_space(self):
    """Per-step keys that train() writes back into replay (RSSM latents that
    start the next sequence from its replay context), compactly stored."""
    if not self.config.replay_context:
      return {}
    return {
        'deter': elements.Space(np.float16, (self.dyn.deter,)),
        'stoch': elements.Space(np.int8, (self.dyn.stoch,))}

  # Acting.

  def init_policy(self, batch_size):
    act = jnp.zeros((batch_size, self._act_size()), f32)
    return (self.dyn.initial(batch_size), act)

  def policy(self, carry, obs, mode='train'):
    state, prevact = carry
    tokens = self.enc(obs, bdims=1)
    state, _ = self.dyn.obs_step(state, tokens, prevact, obs['is_first'])
    dists = self.pol(self.dyn.feat(state))
    if mode == 'eval' and self.config.eval_greedy:
      act = {k: d.pred() for k, d in dists.items()}
    else:
      act = {k: d.sample(nj.seed()) for k, d in dists.items()}
    act = {k: v.astype(self.act_space[k].dtype) for k, v in act.items()}
    prevact = rssm.prep_action(self.act_space, act)
    # The posterior latents go into replay with the step, so that every
    # stored step can start a training sequence (train steps overwrite
    # them with fresher ones).
    return (state, prevact), act, self._compact_latents(state)

  # Learning.

  def train(self, data, inputs=None):
    """inputs: {extension name: {key: array}} from host.inputs() (None: the
    host's current values, as constants)."""
    inputs = self.host.inputs() if inputs is None else inputs
    metrics, (outs_, aux) = self.opt(self.loss, data, inputs)
    self._update_slow()
    for ext in self.exts:
      ext.after_train()
    metrics.update(aux)
    return outs_, metrics

  def report(self, data, inputs=None):
    """Loss metrics of the batch, plus an open-loop video per image key
    (openloop/KEY, see _openloop)."""
    _, (_, metrics) = self.loss(data, inputs)
    if rssm.image_keys(self.obs_space) and data['is_first'].shape[1] > (
        self.config.replay_context + 1):
      metrics.update(self._openloop(data))
    return metrics

  def _openloop(self, data):
    """Open-loop prediction: the posterior observes the first half of each
    sequence, then the prior rolls on alone with the recorded actions.
    Returns {'openloop/KEY': [T, 3H, B*W, C] uint8}: truth, prediction (the
    decoder's mean) and their absolute difference stacked vertically, one
    column per sequence."""
    K = self.config.replay_context
    T = data['is_first'].shape[1] - K
    preds = self.dream(data, T // 2)
    return {f'openloop/{key}': video.openloop_grid(
        data[key][:, K:], preds[key], xp=jnp)
        for key in rssm.image_keys(self.obs_space)}

  def dream(self, data, ctx, length=None, policy=False):
    """The posterior observes the first ctx steps after the replay context,
    then the prior imagines `length` more steps (default: the rest of the
    sequence) from prior samples, with the recorded actions or, with
    policy=True, with actions the policy samples in imagination. Returns
    {image key: [B, ctx + length, H, W, C] decoder means in [0, 255],
    'reward': [B, ctx + length] predicted rewards, 'act_KEY': [B, length]
    imagined actions (policy=True only)}."""
    K = self.config.replay_context
    length = data['is_first'].shape[1] - K - ctx if length is None else length
    _, entries = self._observe(jax.tree.map(lambda x: x[:, :K + ctx], data))
    start = {'deter': entries['deter'][:, -1], 'stoch': entries['stoch'][:, -1]}
    out = {}
    if policy:
      sample = lambda f: {k: d.sample(nj.seed()) for k, d in self.pol(f).items()}
      states, actions = self.dyn.imagine(start, sample, length)
      states = jax.tree.map(lambda x: x[:, 1:], states)
      out.update({f'act_{k}': v[:, :-1] for k, v in actions.items()})
    else:
      act = rssm.prep_action(
          self.act_space, {k: data[k] for k in self.act_space})
      # Step t consumes the action chosen at step t - 1.
      prevact = act[:, K + ctx - 1:K + ctx - 1 + length]

      def step(carry, action):
        carry, _ = self.dyn.img_step(carry, action)
        return carry, carry
      _, states = nj.scan(step, start, prevact, axis=1)
    feat = jnp.concatenate([self.dyn.feat(entries), self.dyn.feat(states)], 1)
    for key, dist in self.dec(feat).items():
      if key in rssm.image_keys(self.obs_space):
        out[key] = sg(dist.pred()).astype(f32) * 255.0
    out['reward'] = sg(self.rew(feat).pred()).astype(f32)
    return out

  def uncertainty(self, data):
    """{'dyn_kl', 'rep_kl'}: [B, T] unclipped KLs of the trained steps,
    as the train step's signals, without decoder, imagination or gradients
    (for refreshing the priorities of the whole buffer)."""
    _, entries = self._observe(data)
    kl = self.dyn.losses(entries)
    return {'dyn_kl': sg(kl['dyn_raw']).astype(f32),
            'rep_kl': sg(kl['rep_raw']).astype(f32)}

  def host_work(self, agent, replay, prepare):
    """The extensions' host sides in the train loop (HostWork)."""
    work = [ext.host_work(agent, replay, prepare) for ext in self.exts]
    return [w for w in work if w is not None]

  def _prevact(self, data):
    """[B, T, A] the action each trained step consumes: the one chosen at
    the step before it."""
    K = self.config.replay_context
    act = rssm.prep_action(self.act_space, {k: data[k] for k in self.act_space})
    prevact = jnp.concatenate([jnp.zeros_like(act[:, :1]), act[:, :-1]], 1)
    return prevact[:, K:]

  def _observe(self, data):
    """Posterior RSSM entries of the trained steps (after the context)."""
    K = self.config.replay_context
    B = data['is_first'].shape[0]
    prevact = self._prevact(data)
    obs = {k: v[:, K:] for k, v in data.items() if k in self.obs_space}
    tokens = self.enc(obs)
    _, entries = self.dyn.observe(
        self._context(data, B, K), tokens, prevact, obs['is_first'])
    return obs, entries

  def loss(self, data, inputs=None):
    """Total loss and (outs for replay, metrics) for one batch."""
    c = self.config
    K = c.replay_context
    B, T = data['is_first'].shape[0], data['is_first'].shape[1] - K
    inputs = self.host.inputs() if inputs is None else inputs
    obs, entries = self._observe(data)
    feat = self.dyn.feat(entries)

    losses, metrics, kl = self._world_model_loss(obs, entries, feat)
    extra, scales = {}, {}  # Extension loss terms and their scales.
    for ext in self.exts:
      terms, mets = ext.losses(obs, entries, feat, self._prevact(data),
                               inputs.get(ext.name, {}))
      extra.update(terms)
      scales.update({k: ext.loss_scales[k] for k in terms})
      metrics.update(mets)
    # Imagination (and the replay value loss it bootstraps) starts from the
    # last L posterior states of each sequence only, to save compute.
    L = min(c.imag_last or T, T)
    last = lambda tree: jax.tree.map(lambda x: x[:, T - L:], tree)
    ret, imag_losses, imag_metrics = self._imagination_loss(
        last(obs), last(entries), inputs)
    losses.update(imag_losses)
    metrics.update(imag_metrics)
    losses['repval'], rdist, rret = self._replay_value_loss(
        last(obs), last(feat), ret[:, 0].reshape(B, L))
    metrics.update({f'loss/{k}': v.mean() for k, v in losses.items()})
    for ext in self.exts:
      for k, w in ext.loss_weights(inputs.get(ext.name, {})).items():
        losses[k] = w * losses[k]
    _check_scales(losses, c.loss_scales)
    total = sum(c.loss_scales[k] * v.mean() for k, v in losses.items())
    if extra:
      total += sum(scales[k] * v.mean() for k, v in extra.items())
      metrics.update({f'loss/{k}': v.mean() for k, v in extra.items()})

    outs_ = {}
    if K:
      outs_['replay'] = {
          'stepid': data['stepid'][:, K:], **self._compact_latents(entries)}
    # Per-step quantities for the priority seam ([B, T], value_error [B, L]:
    # known for all but the last step, which repeats the one before).
    signals = {'dyn_kl': kl['dyn_raw'], 'rep_kl': kl['rep_raw'],
               'recon': losses['rec'],
               'value_error': _pad_last(jnp.abs(rdist.pred() - rret))}
    for ext in self.exts:
      value = ext.step_outputs(signals)
      if value is not None:
        # Values of the last value.shape[1] trained steps.
        outs_[ext.name] = {
            'stepid': data['stepid'][:, K + T - value.shape[1]:],
            'value': value}
    return total, (outs_, metrics)

  def _world_model_loss(self, obs, entries, feat):
    losses = {}
    kl = self.dyn.losses(entries)
    losses['dyn'], losses['rep'] = kl['dyn'], kl['rep']
    weights, metrics = {}, {}
    for ext in self.exts:
      out = ext.recon_weights(obs)
      if out is not None:
        weights.update(out[0])
        metrics.update(out[1])
    recs = {}
    for key, dist in self.dec(feat).items():
      if key in weights:
        recs[key] = dist.loss(obs[key], weights[key])
        metrics[f'loss/rec_{key}_unweighted'] = dist.loss(obs[key]).mean()
      else:
        recs[key] = dist.loss(obs[key])
    losses['rec'] = sum(recs.values())
    losses['rew'] = self.rew(feat).loss(obs['reward'])
    # The continue head learns P(not terminal) and returns use the fixed
    # discount 1 - 1/horizon, where the reference folds the discount into
    # the head's target (contdisc): equal returns, imagination weights
    # larger by the constant 1/discount, which LaProp cancels (tested).
    losses['con'] = self.con(feat).loss(1.0 - obs['is_terminal'].astype(f32))
    # Posterior entropy bonus: discourages the posterior latents from
    # collapsing early (a loss, so the negative entropy; scale 0 by default).
    losses['post_ent'] = -kl['post_ent']
    metrics.update({f'loss/rec_{k}': v.mean() for k, v in recs.items()})
    metrics.update({
        'dyn/kl_dyn_raw': kl['dyn_raw'].mean(),
        'dyn/kl_rep_raw': kl['rep_raw'].mean(),
        'dyn/post_ent': kl['post_ent'].mean(),
        'dyn/prior_ent': kl['prior_ent'].mean(),
        'data/reward': obs['reward'].astype(f32).mean(),
        'data/is_terminal': obs['is_terminal'].astype(f32).mean()})
    return losses, metrics, kl

  def _imagination_loss(self, obs, entries, inputs):
    """Actor (REINFORCE on normalised advantages) and critic (lambda
    returns plus slow-critic regulariser) on rollouts from every given
    posterior state. Returns the lambda returns [starts, H] too."""
    c = self.config
    start = jax.tree.map(
        lambda x: sg(x).reshape((-1, *x.shape[2:])),
        {'deter': entries['deter'], 'stoch': entries['stoch']})
    policy = lambda f: {k: d.sample(nj.seed())
                        for k, d in self.pol(sg(f)).items()}
    states, actions = self.dyn.imagine(start, policy, c.imag_length)
    states, actions = sg(states), sg(actions)
    ifeat = self.dyn.feat(states)
    rew = self.rew(ifeat).pred()
    ext_metrics = {}
    for ext in self.exts:
      rew, mets = ext.imag_reward(
          states, actions, ifeat, rew, inputs.get(ext.name, {}))
      ext_metrics.update(mets)
    con = self.con(ifeat).prob()
    con = con.at[:, 0].set(1.0 - obs['is_terminal'].reshape(-1).astype(f32))
    val = self.val(ifeat).pred()
    disc = 1 - 1 / c.horizon
    ret = fn.lambda_return(rew[:, 1:], val, con[:, 1:], disc, c.lam)
    weight = sg(jnp.cumprod(disc * con, 1) / disc)[:, :-1]
    scale = self.retnorm(ret)
    adv = (ret - val[:, :-1]) / scale

    dists = self.pol(ifeat[:, :-1])
    logp = sum(d.logp(actions[k][:, :-1]) for k, d in dists.items())
    ent = sum(d.entropy() for d in dists.values())
    vdist = self.val(ifeat[:, :-1])
    slow = self.slowval(ifeat[:, :-1]).pred()
    losses = {
        'policy': -(logp * sg(adv) + c.entropy * ent) * weight,
        'value': (vdist.loss(sg(ret)) +
                  c.slowreg * vdist.loss(sg(slow))) * weight}
    metrics = {
        'ac/ret': ret.mean(), 'ac/val': val.mean(), 'ac/adv': adv.mean(),
        'ac/adv_std': adv.std(), 'ac/retnorm_scale': scale,
        'ac/entropy': ent.mean(), 'ac/imag_rew': rew.mean(),
        'ac/imag_con': con.mean(), **ext_metrics}
    return ret, losses, metrics

  def _replay_value_loss(self, obs, feat, boot):
    """Critic on posterior states with lambda returns of the real rewards,
    bootstrapped by the imagined returns; never across an episode end."""
    c = self.config
    disc = 1 - 1 / c.horizon
    last = obs['is_last'].astype(f32)
    term = obs['is_terminal'].astype(f32)
    lam = c.lam * (1 - last[:, 1:])
    rret = fn.lambda_return(
        obs['reward'][:, 1:].astype(f32), boot, 1 - term[:, 1:], disc, lam)
    rdist = self.val(feat[:, :-1])
    rslow = self.slowval(feat[:, :-1]).pred()
    loss = (rdist.loss(sg(rret)) + c.slowreg * rdist.loss(sg(rslow))) * (
        1 - last[:, :-1])
    return loss, rdist, rret

  def _compact_latents(self, state):
    """Posterior latents in the dtypes of ext_space (empty without a replay
    context)."""
    if not self.config.replay_context:
      return {}
    return {'deter': sg(state['deter']).astype(jnp.float16),
            'stoch': jnp.argmax(state['stoch'], -1).astype(jnp.int8)}

  def _context(self, data, B, K):
    """Initial RSSM state: the latents stored in replay at step K - 1, by
    the policy that collected it or by a later train step (obs_step resets
    the state anyway where step K starts an episode)."""
    if not K or 'deter' not in data:
      return self.dyn.initial(B)
    deter = data['deter'][:, K - 1].astype(f32)
    stoch = jax.nn.one_hot(data['stoch'][:, K - 1].astype(jnp.int32),
                           self.dyn.classes, dtype=f32)
    return {'deter': deter, 'stoch': stoch}

  def after_init(self):
    """The slow critic starts as a copy of the critic."""
    self._update_slow(rate=1.0)

  def rename_checkpoint(self, data):
    """A checkpoint's {name: value} under the names this code gives its
    state, so that logdirs written before the RSSM's core became a
    submodule still resume."""
    return {self.dyn.current_name(k): v for k, v in data.items()}

  def _update_slow(self, rate=None):
    """slow <- (1 - rate) * slow + rate * critic, per parameter."""
    rate = self.config.slow_rate if rate is None else rate
    fast = self.val.values
    ctx = nj.context()
    for key, value in fast.items():
      path = f'{self.slowval.path}/{key}'
      ctx[path] = (1 - rate) * ctx[path] + rate * value

  def _act_size(self):
    dummy = {k: jnp.zeros((1, *s.shape), s.dtype)
             for k, s in self.act_space.items()}
    return rssm.prep_action(self.act_space, dummy).shape[-1]


def _pad_last(x):
  """[B, T - 1] -> [B, T] by repeating the last step."""
  return jnp.concatenate([x, x[:, -1:]], 1)
