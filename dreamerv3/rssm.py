"""World model networks: RSSM, encoder and decoder."""

import math
import re

import jax
import jax.numpy as jnp
import ninjax as nj

import embodied.jax.functional as fn
from embodied.jax import nets, outs

f32 = jnp.float32
sg = jax.lax.stop_gradient


def prep_action(act_space, action):
  """Concatenate all action keys into one float vector: one-hot for discrete
  keys, clipped for continuous ones."""
  parts = []
  for key, space in sorted(act_space.items()):
    x = action[key]
    if space.discrete:
      x = jax.nn.one_hot(x, int(space.classes), dtype=f32)
      x = x.reshape((*x.shape[:x.ndim - 1 - len(space.shape)], -1))
    else:
      x = jnp.clip(x.astype(f32), -1, 1)
      x = x.reshape((*x.shape[:x.ndim - len(space.shape)], -1))
    parts.append(x)
  return jnp.concatenate(parts, -1)


class Core(nj.Module):
  """The block-GRU update of the RSSM's deterministic state: the next deter
  [N, deter] from the current deter, stoch and the action consumed. A
  module of its own, so that its parameters are those under its path
  (`values`) and it can run with other parameters (nj.pure)."""

  deter: int = 4096
  hidden: int = 2048
  blocks: int = 8
  dynlayers: int = 1
  norm: str = 'rms'
  act: str = 'silu'

  def __call__(self, deter, stoch, action):
    g = self.blocks
    stoch = stoch.reshape((stoch.shape[0], -1))
    action = action / sg(jnp.maximum(1.0, jnp.abs(action)))
    parts = []
    for name, x in (('indeter', deter), ('instoch', stoch), ('inact', action)):
      x = self.sub(name, nets.Linear, units=self.hidden)(x)
      parts.append(nets.act(self.act)(
          self.sub(name + 'norm', nets.Norm, kind=self.norm)(x)))
    x = jnp.concatenate(parts, -1)
    b = x.shape[0]
    x = jnp.broadcast_to(x[:, None], (b, g, x.shape[-1]))
    x = jnp.concatenate([
        deter.reshape(b, g, -1).astype(x.dtype), x], -1).reshape(b, -1)
    for i in range(self.dynlayers):
      x = self.sub(f'dyn{i}', nets.BlockLinear, units=self.deter, blocks=g)(x)
      x = nets.act(self.act)(self.sub(f'dyn{i}norm', nets.Norm, kind=self.norm)(x))
    # Gates stay block-major ([blocks, N, 3 * D / blocks]) so the update
    # below runs on contiguous memory; one transpose at the end.
    x = self.sub('gates', nets.BlockLinear, units=3 * self.deter, blocks=g)(
        x, block_major=True)
    x = x.astype(f32).reshape(g, b, 3, -1)
    reset, cand, update = x[:, :, 0], x[:, :, 1], x[:, :, 2]
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update - 1)
    deter = deter.astype(f32).reshape(b, g, -1).transpose(1, 0, 2)
    deter = update * cand + (1 - update) * deter
    return deter.transpose(1, 0, 2).reshape(b, -1)


# The core's layers as named in checkpoints written while they sat directly
# under the RSSM ('<rssm>/gates/kernel', now '<rssm>/core/gates/kernel').
_CORE_LAYERS = r'(?:indeter|instoch|inact|dyn\d+|gates)(?:norm)?'


class RSSM(nj.Module):
  """Recurrent state-space model with a block-diagonal GRU-style
  deterministic state and categorical stochastic latents."""

  deter: int = 4096
  hidden: int = 2048
  stoch: int = 32
  classes: int = 32
  blocks: int = 8
  imglayers: int = 2
  obslayers: int = 1
  dynlayers: int = 1
  norm: str = 'rms'
  act: str = 'silu'
  unimix: float = 0.01
  free_nats: float = 1.0
  unroll: bool = False  # Unroll scans (for FLOP counting).

  def __init__(self, act_space):
    self.act_space = act_space
    self.core = Core(
        deter=self.deter, hidden=self.hidden, blocks=self.blocks,
        dynlayers=self.dynlayers, norm=self.norm, act=self.act, name='core')

  def current_name(self, key):
    """The name under which this code keeps a state entry that a checkpoint
    stores as `key`: older checkpoints hold the core's parameters directly
    under the RSSM. Matched anywhere in the key, since the optimizer's
    moments carry their parameter's full name in theirs."""
    return re.sub(rf'(^|/){re.escape(self.path)}/({_CORE_LAYERS})/',
                  rf'\g<1>{self.core.path}/\g<2>/', key)

  def initial(self, batch_size):
    return {'deter': jnp.zeros((batch_size, self.deter), f32),
            'stoch': jnp.zeros((batch_size, self.stoch, self.classes), f32)}

  def feat(self, state):
    stoch = state['stoch'].reshape((*state['stoch'].shape[:-2], -1))
    return jnp.concatenate([state['deter'], stoch], -1).astype(
        nets.COMPUTE_DTYPE)

  def observe(self, carry, tokens, action, reset):
    """Posterior states for a sequence. tokens [B, T, E], action [B, T, A]
    (the previous action for each step), reset [B, T]. Returns the final
    carry and per-step entries {deter, stoch, logit} with time on axis 1."""
    def step(carry, inp):
      carry, entry = self.obs_step(carry, *inp)
      return carry, entry
    inputs = (tokens, action, reset)
    carry, entries = nj.scan(
        step, carry, inputs, axis=1, unroll=self._unroll(tokens.shape[1]))
    return carry, entries

  def obs_step(self, carry, tokens, action, reset):
    carry, action = self._reset(carry, action, reset)
    deter = self.core(carry['deter'], carry['stoch'], action)
    x = jnp.concatenate([deter.astype(nets.COMPUTE_DTYPE),
                         tokens.astype(nets.COMPUTE_DTYPE)], -1)
    for i in range(self.obslayers):
      x = self.sub(f'obs{i}', nets.Linear, units=self.hidden)(x)
      x = nets.act(self.act)(self.sub(f'obs{i}norm', nets.Norm, kind=self.norm)(x))
    logit = self._logit('obslogit', x)
    stoch = outs.OneHotST(logit, self.unimix).sample(nj.seed())
    carry = {'deter': deter, 'stoch': stoch}
    return carry, {'deter': deter, 'stoch': stoch, 'logit': logit}

  def img_step(self, carry, action):
    deter = self.core(carry['deter'], carry['stoch'], action)
    logit = self._prior(deter)
    stoch = outs.OneHotST(logit, self.unimix).sample(nj.seed())
    return {'deter': deter, 'stoch': stoch}, logit

  def imagine(self, carry, policy, length):
    """Roll out `length` steps from carry with actions from policy(feat).
    Returns states [N, length + 1] (start included) and actions taken at
    each of them (the last action is sampled but not executed)."""
    def step(carry, _):
      action = policy(self.feat(carry))
      new, _ = self.img_step(carry, prep_action(self.act_space, action))
      return new, (carry, action)
    last, (states, actions) = nj.scan(
        step, carry, jnp.arange(length), length=length, axis=0,
        unroll=self._unroll(length))
    swap = lambda x: x.swapaxes(0, 1)
    states, actions = jax.tree.map(swap, (states, actions))
    final_action = policy(self.feat(last))
    states = jax.tree.map(
        lambda s, l: jnp.concatenate([s, l[:, None]], 1), states, last)
    actions = jax.tree.map(
        lambda a, l: jnp.concatenate([a, l[:, None]], 1), actions,
        final_action)
    return states, actions

  def losses(self, entries):
    """Per-step KL terms with KL balancing: dyn trains the prior toward the
    (frozen) posterior, rep the posterior toward the (frozen) prior; each is
    clipped below free_nats. Also returns the unclipped dyn KL."""
    prior = self._prior(entries['deter'])
    post_d = outs.OneHotST(entries['logit'], self.unimix)
    prior_d = outs.OneHotST(prior, self.unimix)
    post_sg = outs.OneHotST(sg(entries['logit']), self.unimix)
    prior_sg = outs.OneHotST(sg(prior), self.unimix)
    dyn_raw = post_sg.kl(prior_d)
    rep_raw = post_d.kl(prior_sg)
    return {
        'dyn': fn.free_nats_kl(dyn_raw, self.free_nats),
        'rep': fn.free_nats_kl(rep_raw, self.free_nats),
        'dyn_raw': dyn_raw, 'rep_raw': rep_raw,
        'post_ent': post_d.entropy(), 'prior_ent': prior_d.entropy()}

  def _unroll(self, length):
    return length if self.unroll else 1

  def _reset(self, carry, action, reset):
    keep = (1.0 - reset.astype(f32))
    carry = jax.tree.map(
        lambda x: x * keep.reshape((-1,) + (1,) * (x.ndim - 1)), carry)
    return carry, action * keep[:, None]

  def _prior(self, deter):
    x = deter.astype(nets.COMPUTE_DTYPE)
    for i in range(self.imglayers):
      x = self.sub(f'img{i}', nets.Linear, units=self.hidden)(x)
      x = nets.act(self.act)(self.sub(f'img{i}norm', nets.Norm, kind=self.norm)(x))
    return self._logit('imglogit', x)

  def _logit(self, name, x):
    x = self.sub(name, nets.Linear, units=self.stoch * self.classes)(x)
    return x.astype(f32).reshape((*x.shape[:-1], self.stoch, self.classes))


def image_keys(space):
  return sorted(k for k, s in space.items()
                if len(s.shape) == 3 and not k.startswith('log/'))


def _vector_keys(space):
  return sorted(k for k, s in space.items() if len(s.shape) in (0, 1) and
                not k.startswith('log/') and k not in (
                    'reward', 'is_first', 'is_last', 'is_terminal'))


class Encoder(nj.Module):
  """CNN for image keys (5x5 conv, 2x2 max-pool, RMSNorm, SiLU per stage)
  and a symlog MLP for vector keys; their outputs are concatenated."""

  units: int = 1024
  layers: int = 3
  depth: int = 64
  mults: tuple = (2, 3, 4, 4)
  kernel: int = 5
  norm: str = 'rms'
  act: str = 'silu'
  symlog: bool = True
  fast: bool = True

  def __init__(self, obs_space):
    self.obs_space = obs_space
    self.imgkeys = image_keys(obs_space)
    self.veckeys = _vector_keys(obs_space)

  def __call__(self, obs, bdims=2):
    bshape = obs['is_first'].shape[:bdims]
    out = []
    if self.veckeys:
      vecs = [obs[k].astype(f32).reshape((*bshape, -1)) for k in self.veckeys]
      x = jnp.concatenate(vecs, -1)
      x = fn.symlog(x) if self.symlog else x
      x = x.reshape((-1, x.shape[-1]))
      x = self.sub('mlp', nets.MLP, layers=self.layers, units=self.units, act=self.act,
                 norm=self.norm)(x)
      out.append(x)
    if self.imgkeys:
      imgs = [obs[k] for k in self.imgkeys]
      x = jnp.concatenate(imgs, -1)
      x = x.reshape((-1, *x.shape[bdims:]))
      x = nets.cast(x.astype(f32) / 255.0 - 0.5)
      for i, mult in enumerate(self.mults):
        x = self.sub(f'conv{i}', nets.Conv2D, depth=self.depth * mult,
                     kernel=self.kernel, pool=True, fast=self.fast)(x)
        x = nets.act(self.act)(self.sub(f'conv{i}norm', nets.Norm, kind=self.norm)(x))
      out.append(x.reshape((x.shape[0], -1)))
    x = jnp.concatenate([o.astype(nets.COMPUTE_DTYPE) for o in out], -1)
    return x.reshape((*bshape, x.shape[-1]))


class Decoder(nj.Module):
  """Mirror of the encoder: an MLP predicting symlog vectors and a
  transposed CNN (nearest 2x upsampling then 5x5 conv) predicting images
  in [0, 1] through a sigmoid. The CNN's first feature map is the
  reference's: the deterministic state through a block-linear layer (block
  g fills channel group g of every pixel), plus the stochastic state through
  a two-layer MLP, then norm and activation (bspace 0: one dense layer from
  the whole feature, the form of logdirs written before)."""

  units: int = 1024
  layers: int = 3
  depth: int = 64
  mults: tuple = (2, 3, 4, 4)
  kernel: int = 5
  norm: str = 'rms'
  act: str = 'silu'
  fast: bool = True
  bspace: int = 8
  # Image likelihood: 'mse' on the sigmoid output, or 'bernoulli' (per-pixel
  # binary cross-entropy on logits) for binary images such as MinAtar's.
  image_dist: str = 'mse'

  def __init__(self, obs_space, deter):
    """deter: the size of the deterministic state that starts each feature
    vector (RSSM.feat)."""
    self.obs_space = obs_space
    self.deter = deter
    self.imgkeys = image_keys(obs_space)
    self.veckeys = _vector_keys(obs_space)

  def __call__(self, feat, bdims=2):
    """Returns {key: output distribution} with batch dims of feat."""
    bshape = feat.shape[:bdims]
    feat = feat.reshape((-1, feat.shape[-1]))
    dists = {}
    if self.veckeys:
      x = self.sub('mlp', nets.MLP, layers=self.layers, units=self.units, act=self.act,
                 norm=self.norm)(feat)
      sizes = [int(math.prod(self.obs_space[k].shape)) for k in self.veckeys]
      x = self.sub('vecout', nets.Linear, units=sum(sizes))(x).astype(f32)
      offset = 0
      for key, size in zip(self.veckeys, sizes):
        mean = x[:, offset: offset + size]
        offset += size
        mean = mean.reshape((*bshape, *self.obs_space[key].shape))
        dists[key] = outs.SymlogMSE(mean, len(self.obs_space[key].shape))
    if self.imgkeys:
      shapes = [self.obs_space[k].shape for k in self.imgkeys]
      h, w = shapes[0][:2]
      stages = len(self.mults)
      minh, minw = h // 2 ** stages, w // 2 ** stages
      depths = [self.depth * m for m in self.mults]
      channels = sum(s[-1] for s in shapes)
      x = self.spatial(feat, (minh, minw, depths[-1]))
      outdepths = depths[:-1][::-1] + [channels]
      for i, depth in enumerate(outdepths):
        last = i == len(outdepths) - 1
        x = self.sub(f'conv{i}', nets.Conv2D, depth=depth, kernel=self.kernel,
                     upsample=True, fast=self.fast)(x)
        if not last:
          x = nets.act(self.act)(self.sub(f'conv{i}norm', nets.Norm, kind=self.norm)(x))
      x = x.astype(f32).reshape((*bshape, *x.shape[1:]))
      offset = 0
      for key, shape in zip(self.imgkeys, shapes):
        out = x[..., offset: offset + shape[-1]]
        offset += shape[-1]
        if self.image_dist == 'bernoulli':
          dists[key] = outs.Bernoulli(out, 3, squash=lambda t: t / 255.0)
        else:
          # A sigmoid maps the output into the pixel range [0, 1], as in
          # the reference DreamerV3.
          dists[key] = outs.MSE(
              jax.nn.sigmoid(out), 3, squash=lambda t: t / 255.0)
    return dists

  def spatial(self, feat, shape):
    """The first feature map [N, h, w, c] from features [N, deter + stoch]."""
    h, w, c = shape
    if not self.bspace:
      x = self.sub('imgin', nets.Linear, units=h * w * c)(feat)
      x = x.reshape((-1, h, w, c))
    else:
      deter, stoch = feat[:, :self.deter], feat[:, self.deter:]
      g = self.bspace
      # [g, N, h * w * c / g] -> [N, h, w, g * c / g]: each block of the
      # deterministic state writes its own channel group at every pixel.
      x0 = self.sub('deterin', nets.BlockLinear, units=h * w * c, blocks=g)(
          deter, block_major=True)
      x0 = x0.reshape((g, -1, h, w, c // g)).transpose(1, 2, 3, 0, 4)
      x0 = x0.reshape((-1, h, w, c))
      x1 = self.sub('stochin', nets.Linear, units=2 * self.units)(stoch)
      x1 = nets.act(self.act)(
          self.sub('stochinnorm', nets.Norm, kind=self.norm)(x1))
      x1 = self.sub('stochout', nets.Linear, units=h * w * c)(x1)
      x = x0 + x1.reshape((-1, h, w, c))
    return nets.act(self.act)(self.sub('imginnorm', nets.Norm, kind=self.norm)(x))
