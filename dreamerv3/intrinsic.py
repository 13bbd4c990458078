"""Latent reward disagreement (DreamerV3-XP): an intrinsic reward from K
latent dynamics members that imagine alongside the agent's own rollout.

For every step t' of the agent's imagined rollout (h, z, a), each member k
predicts the next deterministic state h_k(t'+1) from (h(t'), z(t'), a(t'));
the stochastic part z(t'+1) and the actions are the agent's own. The reward
head's mean prediction (pred(), not a sample) on (h_k(t'+1), z(t'+1)) is
member k's reward r_k. Members are stacked along a leading axis and
evaluated at once (batched matmuls or jax.vmap), never one by one.

The actor and the critic train on the mixed reward at every imagined step
    r = lambda * r_ext + (1 - lambda) * r_intr,
    r_intr = add_mean * mean_k r_k + scale * bonus,
where r_ext is the reward head's prediction on the agent's own state. The
reward is per step: DreamerV3-XP's formula averages the bracket over a window
t'..t+L, which is what the lambda-return over the imagined rollout already
does (and that sum has L + 1 terms over L and runs past the rollout's
end), so there is no second window.

Options (config `intrinsic.*`, switched on by `intrinsic.enabled`; their
defaults are DEFAULTS below; DreamerV3-XP's names where it has them, and its
flags `agent.use_intrinsic` and `agent.intrinsic.*` are aliases):
  ensemble_size       K members (at least 2).
  learn_strategy      how the members differ:
    joint_mlp         K MLPs (`layers` hidden layers of `units`, RMSNorm,
                      SiLU) on concat(h, z, a), predicting h(t'+1) - h(t');
                      trained with MSE to the stop-gradient posterior next
                      deter of replayed sequences (steps after an episode
                      start excluded), in the agent's train step and
                      optimizer, loss term `ensemble` scaled by loss_scale.
    ema               K EMA copies of the RSSM's deterministic core (the
                      block GRU), copy k tracking the core at its own rate,
                      geometrically spaced from ema_rate_min to ema_rate_max;
                      no loss.
    perturbed_starts  the agent's own core from K perturbed states
                      h(t') + N(0, perturb_std^2) (noise drawn from the step's
                      seed, so each train step draws new noise); no loss.
  exploration_type    what the members disagree on:
    reward_variance   their rewards r_k;
    state_disagreement (Plan2Explore) their next deter h_k, with the squared
                      deviations averaged over the deter dimensions (z is
                      shared, so it adds nothing).
  reward_type         the bonus from the members' predictions x_k and the
                      agent's own x (reward or deter):
    disagreement      mean_k (x_k - mean_k x_k)^2 (variance over members);
    prediction_error  (mean_k x_k - x)^2;
    max_disagreement  max_k (x_k - mean_k x_k)^2.
  add_mean            adds the members' mean reward mean_k r_k to r_intr
                      (DreamerV3-XP's mean + variance).
  normalize, scale, scale_rate, scale_floor
                      the bonus is in squared units, so with normalize it is
                      rescaled to the extrinsic reward's magnitude: scale =
                      scale * max(E|r_ext|, scale_floor) / E[bonus], with
                      both expectations running (bias-corrected) EMAs at
                      rate scale_rate over the imagined steps of each train
                      step; without normalize the factor is `scale`.
  scheduling_strategy lambda over training, computed on the host (Schedule)
                      and fed into the jitted train step as an input array:
    constant          lambda = lambda_start;
    exp_decay         1 - lambda decays exponentially in env steps from
                      1 - lambda_start to the floor 1 - lambda_end with
                      e-folding time decay_steps;
    slope_ema         an EMA (rate ema_alpha) of finished episodes' returns;
                      over the last `window` EMA values, min-max scaled to
                      [0, 1] (all zeros when flat), slope = last - first and
                      lambda = sigmoid(slope / temperature) clipped to
                      [lambda_min, lambda_max]; lambda_start until `window`
                      episodes have finished. The method's prose says lambda
                      falls while returns improve, its code sets lambda =
                      sigmoid(slope), which rises: this follows the code
                      (improving returns weigh the extrinsic reward more).
  units, layers       joint_mlp member sizes.

Critic: one critic learns the mixed return (its imagined targets use the
mixed reward, normalised by the agent's return normaliser as usual). The
replay value loss, whose lambda-returns hold real rewards only, is weighted
by lambda, so it counts fully when the reward is purely extrinsic and fades
in proportion to the intrinsic share instead of pulling the critic towards
another objective.

Metrics: intrinsic/reward_ext, intrinsic/reward_intr, intrinsic/reward_mean,
intrinsic/disagreement (the bonus before scaling), intrinsic/scale,
intrinsic/lambda, intrinsic/env_steps, intrinsic/ensemble_loss (joint_mlp).

With intrinsic.enabled False nothing is installed: parameters, loss and
random draws are the plain agent's.
"""

import collections
import math

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np

from embodied.jax import nets

from . import rssm
from .extensions import Extension, HostState

f32 = jnp.float32
sg = jax.lax.stop_gradient

LEARN = ('joint_mlp', 'ema', 'perturbed_starts')
EXPLORATION = ('reward_variance', 'state_disagreement')
REWARDS = ('disagreement', 'prediction_error', 'max_disagreement')
SCHEDULES = ('constant', 'exp_decay', 'slope_ema')
CONFIG = ('intrinsic',)
# The one place of the defaults: Intrinsic and Ensemble get every option from
# the config (their fields have no defaults of their own).
DEFAULTS = """
# Latent reward disagreement (DreamerV3-XP, dreamerv3/intrinsic.py; every
# option is defined in its docstring): K dynamics members imagine next
# states, reward = lambda * r_ext + (1 - lambda) * r_intr.
intrinsic:
  enabled: False                  # install the extension (off: plain agent)
  ensemble_size: 5                # K members (at least 2)
  learn_strategy: joint_mlp       # joint_mlp | ema | perturbed_starts
  # reward_variance | state_disagreement (Plan2Explore: on next states)
  exploration_type: reward_variance
  # disagreement | prediction_error | max_disagreement
  reward_type: disagreement
  add_mean: True                  # r_intr includes the members' mean reward
  scheduling_strategy: exp_decay  # constant | exp_decay | slope_ema
  # constant: the value; exp_decay: the start; slope_ema: until the window
  # fills
  lambda_start: 0.5
  lambda_end: 0.99                # exp_decay: 1 - lambda decays to 1 - this
  decay_steps: 1e5                # exp_decay: e-folding time in env steps
  ema_alpha: 0.05                 # slope_ema: EMA rate over episode returns
  window: 50                      # slope_ema: episodes in the slope window
  temperature: 1.0                # slope_ema: lambda = sigmoid(slope / this)
  lambda_min: 0.0                 # slope_ema: lower clip bound of lambda
  lambda_max: 1.0                 # slope_ema: upper clip bound of lambda
  # Rescale the bonus to the extrinsic reward's magnitude.
  normalize: True
  scale: 1.0                      # factor on the (normalised) bonus
  scale_rate: 0.01                # EMA rate of the magnitudes
  scale_floor: 0.01               # least extrinsic magnitude in the scale
  loss_scale: 1.0                 # joint_mlp: scale of the ensemble loss
  units: 1024                     # joint_mlp: member MLP width
  layers: 2                       # joint_mlp: member hidden layers
  ema_rate_min: 0.001             # ema: slowest member rate (geometric to max)
  ema_rate_max: 0.1               # ema: fastest member rate
  perturb_std: 0.1                # perturbed_starts: std of the deter noise
"""
# DreamerV3-XP's flags.
ALIASES = {
    'agent.use_intrinsic': 'intrinsic.enabled',
    'agent.intrinsic': 'intrinsic',
}
RANGES = (
    (r'intrinsic\.ensemble_size', 'int', 2, None),
    (r'intrinsic\.window', 'int', 2, None),
    (r'intrinsic\.lambda_(start|end|min|max)', 'number', 0, 1),
    (r'intrinsic\.(ema_alpha|scale_rate|ema_rate_min|ema_rate_max)',
     'number', 1e-9, 1),
    (r'intrinsic\.(decay_steps|temperature)', 'number', 1e-9, None),
    (r'intrinsic\.(units|layers)', 'int', 1, None),
)
CHOICES = {
    'intrinsic.learn_strategy': LEARN,
    'intrinsic.exploration_type': EXPLORATION,
    'intrinsic.reward_type': REWARDS,
    'intrinsic.scheduling_strategy': SCHEDULES,
}
# Keys that shape the extension's state. Logdirs written before the keys
# existed had no intrinsic modules.
STRUCTURAL = (
    (r'intrinsic\.enabled', False),
    (r'intrinsic\.(ensemble_size|learn_strategy|units|layers)', None),
)


def bonus(x, ref, reward_type):
  """Exploration bonus of member predictions x [K, ..., D] given the agent's
  own prediction ref [..., D]; squared deviations averaged over D -> [...]."""
  mean = x.mean(0)
  if reward_type == 'disagreement':
    return ((x - mean) ** 2).mean(-1).mean(0)
  if reward_type == 'prediction_error':
    return ((mean - ref) ** 2).mean(-1)
  if reward_type == 'max_disagreement':
    return ((x - mean) ** 2).mean(-1).max(0)
  raise ValueError(f"Unknown reward_type '{reward_type}'")


def exp_decay_lambda(steps, start, end, decay_steps):
  """1 - lambda from 1 - start to 1 - end, e-folding time decay_steps."""
  w_start, w_end = 1.0 - start, 1.0 - end
  return 1.0 - (w_end + (w_start - w_end) * math.exp(-steps / decay_steps))


def slope_lambda(emas, window, start, temperature, low, high):
  """lambda from the last `window` EMA values of episode returns."""
  if len(emas) < window:
    return float(start)
  e = np.asarray(list(emas)[-window:], np.float64)
  span = e.max() - e.min()
  scaled = (e - e.min()) / span if span > 0 else np.zeros_like(e)
  slope = scaled[-1] - scaled[0]
  return float(np.clip(1.0 / (1.0 + np.exp(-slope / temperature)), low, high))


class Schedule(HostState):
  """Host side of the lambda schedule: counts env steps and episode returns
  (fed every env step by the run loop), checkpointed with the run."""

  def __init__(self, strategy, lambda_start, lambda_end, decay_steps,
               ema_alpha, window, temperature, lambda_min, lambda_max):
    self.strategy = strategy
    self.start, self.end, self.decay_steps = lambda_start, lambda_end, \
        decay_steps
    self.alpha, self.window, self.temperature = ema_alpha, window, temperature
    self.low, self.high = lambda_min, lambda_max
    self.steps = 0
    self.ema = None
    self.emas = collections.deque(maxlen=int(window))
    self.score = {}  # Return so far of each env worker's episode.

  def on_step(self, tran, worker):
    self.steps += 1
    if tran['is_first']:
      self.score[worker] = 0.0
    else:
      self.score[worker] = self.score.get(worker, 0.0) + float(tran['reward'])
    if tran['is_last']:
      self.add_return(self.score.pop(worker))

  def add_return(self, value):
    value = float(value)
    self.ema = value if self.ema is None else (
        self.alpha * value + (1 - self.alpha) * self.ema)
    self.emas.append(self.ema)

  def value(self):
    if self.strategy == 'constant':
      return float(self.start)
    if self.strategy == 'exp_decay':
      return exp_decay_lambda(
          self.steps, self.start, self.end, self.decay_steps)
    if self.strategy == 'slope_ema':
      return slope_lambda(self.emas, self.window, self.start,
                          self.temperature, self.low, self.high)
    raise ValueError(f"Unknown scheduling_strategy '{self.strategy}'")

  def inputs(self):
    return {'lambda': np.float32(self.value()),
            'steps': np.float32(self.steps)}

  def save(self):
    return {'steps': self.steps, 'ema': self.ema, 'emas': list(self.emas),
            'score': dict(self.score)}

  def load(self, data):
    self.steps = int(data['steps'])
    self.ema = data['ema']
    self.emas = collections.deque(data['emas'], maxlen=int(self.window))
    self.score = dict(data['score'])


class Ensemble(nj.Module):
  """K MLPs with stacked parameters ([K, ...] per tensor) on one shared
  input: one batched matmul per layer for all members."""

  size: int
  layers: int
  units: int
  eps: float = 1e-4

  def __init__(self, outdim):
    self.outdim = outdim

  def __call__(self, x):
    """x [N, D] -> [K, N, outdim] float32."""
    x = self.hidden(x)
    kernel, bias = self.output(x.shape[-1])
    x = jnp.einsum('nd,kdo->kno' if x.ndim == 2 else 'knd,kdo->kno', x,
                   kernel.astype(nets.COMPUTE_DTYPE))
    return x.astype(f32) + bias[:, None]

  def hidden(self, x):
    """x [N, D] -> the last hidden layer [K, N, units] (x itself without
    hidden layers)."""
    K = self.size
    x = x.astype(nets.COMPUTE_DTYPE)
    for i in range(self.layers):
      din = x.shape[-1]
      kernel = self.value(f'kernel{i}', nets.init(din, (K, din, self.units)))
      bias = self.value(f'bias{i}', jnp.zeros, (K, self.units), f32)
      kernel = kernel.astype(nets.COMPUTE_DTYPE)
      x = jnp.einsum('nd,kdo->kno' if i == 0 else 'knd,kdo->kno', x, kernel)
      x = x.astype(f32) + bias[:, None]
      scale = self.value(f'scale{i}', jnp.ones, (K, self.units), f32)
      x = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps)
      x = jax.nn.silu(x * scale[:, None]).astype(nets.COMPUTE_DTYPE)
    return x

  def output(self, din=None):
    """The output layer's (kernel [K, din, outdim], bias [K, outdim])."""
    i, K = self.layers, self.size
    din = din or self.units
    kernel = self.value(f'kernel{i}', nets.init(din, (K, din, self.outdim)))
    bias = self.value(f'bias{i}', jnp.zeros, (K, self.outdim), f32)
    return kernel, bias


class Intrinsic(nj.Module, Extension):
  """The extension: fills the losses (joint_mlp), imag_reward and
  loss_weights seams and keeps the Schedule as host state."""

  # The keys of DEFAULTS but `enabled`, all given by install().
  ensemble_size: int
  learn_strategy: str
  exploration_type: str
  reward_type: str
  add_mean: bool
  scheduling_strategy: str
  lambda_start: float
  lambda_end: float
  decay_steps: float
  ema_alpha: float
  window: int
  temperature: float
  lambda_min: float
  lambda_max: float
  normalize: bool
  scale: float
  scale_rate: float
  scale_floor: float
  loss_scale: float
  units: int
  layers: int
  ema_rate_min: float
  ema_rate_max: float
  perturb_std: float

  def __init__(self, dyn, rew, act_space):
    self.dyn, self.rew, self.act_space = dyn, rew, act_space
    self.modules = []
    if self.learn_strategy == 'joint_mlp':
      self.members = Ensemble(
          dyn.deter, size=self.ensemble_size, layers=self.layers,
          units=self.units, name='members')
      self.modules = [self.members]
    self.loss_scales = {'ensemble': self.loss_scale}
    self.host = Schedule(
        self.scheduling_strategy, self.lambda_start, self.lambda_end,
        self.decay_steps, self.ema_alpha, self.window, self.temperature,
        self.lambda_min, self.lambda_max)

  def predict(self, deter, stoch, action):
    """Next deter of every member from (h, z, a) rows [N, ...] ->
    [K, N, deter]."""
    K, N = self.ensemble_size, deter.shape[0]
    if self.learn_strategy == 'joint_mlp':
      x = jnp.concatenate([
          deter.astype(f32), stoch.reshape((N, -1)).astype(f32),
          action.astype(f32)], -1)
      return deter.astype(f32)[None] + self.members(x).astype(f32)
    if self.learn_strategy == 'ema':
      core = nj.pure(self.dyn.core, nested=True)
      path = self.dyn.core.path
      params = {f'{path}/{k}': v for k, v in self._ema_params().items()}
      return jax.vmap(lambda p: core(p, deter, stoch, action)[1])(params)
    if self.learn_strategy == 'perturbed_starts':
      noise = self.perturb_std * jax.random.normal(
          nj.seed(), (K, *deter.shape), f32)
      tile = lambda x: jnp.broadcast_to(x[None], (K, *x.shape)).reshape(
          (K * N, *x.shape[1:]))
      out = self.dyn.core(
          (deter[None] + noise).reshape((K * N, -1)), tile(stoch),
          tile(action))
      return out.reshape((K, N, -1))
    raise ValueError(f"Unknown learn_strategy '{self.learn_strategy}'")

  def losses(self, obs, entries, feat, prevact, inputs):
    if self.learn_strategy != 'joint_mlp':
      return {}, {}
    deter, stoch = sg(entries['deter']), sg(entries['stoch'])
    B, T = deter.shape[:2]
    flat = lambda x: x.reshape((B * (T - 1), *x.shape[2:]))
    # Step t + 1 consumes the action chosen at step t (prevact[:, t + 1]).
    pred = self.predict(flat(deter[:, :-1]), flat(stoch[:, :-1]),
                        flat(prevact[:, 1:]))
    target = flat(deter[:, 1:]).astype(f32)
    err = ((pred - target[None]) ** 2).mean((0, 2)).reshape(B, T - 1)
    # After an episode start the state is reset, not a prediction.
    valid = 1.0 - obs['is_first'][:, 1:].astype(f32)
    loss = err * valid
    metric = loss.sum() / jnp.maximum(valid.sum(), 1.0)
    return {'ensemble': loss}, {'intrinsic/ensemble_loss': metric}

  def imag_reward(self, states, actions, feat, reward, inputs):
    N, H = reward.shape[0], reward.shape[1] - 1
    K = self.ensemble_size
    act = rssm.prep_action(self.act_space, actions)
    flat = lambda x: x.reshape((N * H, *x.shape[2:]))
    deter, stoch = flat(states['deter'][:, :-1]), flat(states['stoch'][:, 1:])
    now, act = flat(states['stoch'][:, :-1]), flat(act[:, :-1])
    r_ext = sg(flat(reward[:, 1:])).astype(f32)
    if self.exploration_type == 'reward_variance' and self._factored():
      rk = sg(self._member_rewards(deter, now, act, stoch))
      b = bonus(rk[..., None], r_ext[..., None], self.reward_type)
    elif self.exploration_type in EXPLORATION:
      nxt = sg(self.predict(deter, now, act))
      tile = jnp.broadcast_to(stoch[None], (K, *stoch.shape))
      rk = sg(self.rew(self.dyn.feat({'deter': nxt, 'stoch': tile})).pred())
      rk = rk.astype(f32)  # [K, N * H]
      if self.exploration_type == 'reward_variance':
        b = bonus(rk[..., None], r_ext[..., None], self.reward_type)
      else:
        own = flat(states['deter'][:, 1:]).astype(f32)
        b = bonus(nxt, own, self.reward_type)
    else:
      raise ValueError(
          f"Unknown exploration_type '{self.exploration_type}'")
    scale = self._scale(r_ext, b)
    mean = rk.mean(0)
    r_intr = float(self.add_mean) * mean + scale * b
    lam = inputs['lambda']
    mixed = lam * r_ext + (1 - lam) * r_intr
    reward = reward.at[:, 1:].set(mixed.reshape(N, H).astype(reward.dtype))
    metrics = {
        'intrinsic/reward_ext': r_ext.mean(),
        'intrinsic/reward_intr': r_intr.mean(),
        'intrinsic/reward_mean': mean.mean(),
        'intrinsic/disagreement': b.mean(),
        'intrinsic/scale': scale, 'intrinsic/lambda': lam,
        'intrinsic/env_steps': inputs['steps']}
    return reward, metrics

  def _factored(self):
    return (self.learn_strategy == 'joint_mlp' and self.layers >= 1 and
            self.rew.layers >= 1)

  def _member_rewards(self, deter, stoch, action, stoch_next):
    """The reward head's pred() on every member's (h_k(t'+1), z(t'+1)),
    [K, N], without forming h_k. A member's next deter is h + s_k U_k + c_k
    (s_k its last hidden layer, U_k, c_k its output layer), so the head's
    first layer W, b gives
      [h_k, z'] W + b = ([h, z'] W + b) + s_k (U_k W_h) + c_k W_h,
    with W_h the rows of W that read the deter: per member a units x units
    product instead of units x deter and (deter + stoch) x head units."""
    N = deter.shape[0]
    x = jnp.concatenate([
        deter.astype(f32), stoch.reshape((N, -1)).astype(f32),
        action.astype(f32)], -1)
    hidden = self.members.hidden(x)  # [K, N, units]
    kernel, bias = self.members.output()
    cdt = nets.COMPUTE_DTYPE
    feat = self.dyn.feat({'deter': deter, 'stoch': stoch_next})
    mlp = self.rew.mlp
    w, b = mlp.linears[0].params(feat.shape[-1])
    shared = feat.astype(cdt) @ w.astype(cdt) + b.astype(cdt)  # As Linear.
    w_deter = w[:deter.shape[-1]].astype(f32)
    fused = jnp.einsum('kud,dr->kur', kernel.astype(f32), w_deter)
    offset = bias.astype(f32) @ w_deter  # [K, head units]
    pre = shared[None].astype(f32) + jnp.einsum(
        'knu,kur->knr', hidden, fused.astype(cdt)).astype(f32) + offset[:, None]
    # The head's MLP from its first layer's output on, as MLP.__call__
    # runs it (rows flattened).
    x = pre.astype(cdt).reshape((-1, pre.shape[-1]))
    for i, (linear, norm) in enumerate(zip(mlp.linears, mlp.norms)):
      if i > 0:
        x = linear(x)
      x = nets.act(mlp.act)(norm(x))
    x = x.reshape((*pre.shape[:-1], x.shape[-1]))
    return self.rew.dist(x).pred().astype(f32)

  def loss_weights(self, inputs):
    return {'repval': inputs['lambda']}

  def after_train(self):
    if self.learn_strategy != 'ema':
      return
    core = self.dyn.core.values
    rates = self._ema_rates()
    for i, name in enumerate(sorted(core)):
      old = self.read(f'ema{i}')
      rate = rates.reshape((-1,) + (1,) * (old.ndim - 1))
      self.write(f'ema{i}', (1 - rate) * old + rate * core[name][None])

  def _scale(self, ext, b):
    """Running magnitudes of the extrinsic reward and the bonus (state kept
    whatever `normalize`, so that option changes no shapes)."""
    r = self.scale_rate
    count = self.value('count', jnp.zeros, (), f32)
    ext_mag = self.value('ext_mag', jnp.zeros, (), f32)
    bonus_mag = self.value('bonus_mag', jnp.zeros, (), f32)
    count = self.write('count', count + 1)
    ext_mag = self.write('ext_mag', (1 - r) * ext_mag + r * jnp.abs(ext).mean())
    bonus_mag = self.write('bonus_mag', (1 - r) * bonus_mag + r * b.mean())
    if not self.normalize:
      return f32(self.scale)
    debias = 1 - (1 - r) ** count
    return self.scale * jnp.maximum(ext_mag / debias, self.scale_floor) / (
        jnp.maximum(bonus_mag / debias, 1e-8))

  def _ema_rates(self):
    return jnp.exp(jnp.linspace(
        math.log(self.ema_rate_min), math.log(self.ema_rate_max),
        self.ensemble_size)).astype(f32)

  def _ema_params(self):
    """{core parameter name (under the core's path): [K, ...]} the EMA
    copies, created as copies of the core. Copy i is stored as ema{i},
    the core's parameters counted in sorted order."""
    core, K = self.dyn.core.values, self.ensemble_size
    return {name: self.value(
        f'ema{i}', lambda v=core[name]: jnp.repeat(v[None], K, 0))
            for i, name in enumerate(sorted(core))}


def check(config):
  c = config.intrinsic
  if c.lambda_min > c.lambda_max:
    return (f'intrinsic.lambda_min ({c.lambda_min}) must be at most '
            f'intrinsic.lambda_max ({c.lambda_max})')
  if c.ema_rate_min > c.ema_rate_max:
    return (f'intrinsic.ema_rate_min ({c.ema_rate_min}) must be at '
            f'most intrinsic.ema_rate_max ({c.ema_rate_max})')
  if c.enabled and c.learn_strategy == 'joint_mlp' and config.batch_length < 2:
    return (f'intrinsic.learn_strategy joint_mlp trains on pairs of '
            f'steps: batch_length must be at least 2, got '
            f'{config.batch_length}')
  return None


def install(agent, config):
  """The extension on the agent, or None when intrinsic.enabled is off."""
  options = dict(config.intrinsic)
  if not options.pop('enabled'):
    return None
  return Intrinsic(agent.dyn, agent.rew, agent.act_space, **options,
                   name='intrinsic')
