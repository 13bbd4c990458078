"""RSSM, encoder and decoder: scan vs step loops, resets, shapes, losses."""


import elements
import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np
import pytest

from embodied.jax import outs
from dreamerv3 import rssm as rssm_lib
from tests.helpers import fill_params

ACT = {'action': elements.Space(np.int32, (), 0, 3)}
B, T, E = 2, 6, 5


def make_rssm():
  return rssm_lib.RSSM(
      ACT, deter=16, hidden=8, stoch=4, classes=3, blocks=2, name='rssm')


def make_inputs(seed=0, reset_at=None):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.normal(size=(B, T, E)), jnp.float32)
  act = rng.integers(0, 3, (B, T)).astype(np.int32)
  action = rssm_lib.prep_action(ACT, {'action': jnp.asarray(act)})
  reset = np.zeros((B, T), bool)
  reset[:, 0] = True
  if reset_at is not None:
    reset[:, reset_at] = True
  return tokens, action, jnp.asarray(reset)


def random_carry(seed):
  rng = np.random.default_rng(seed)
  stoch = jax.nn.one_hot(rng.integers(0, 3, (B, 4)), 3)
  return {'deter': jnp.asarray(rng.normal(size=(B, 16)), jnp.float32),
          'stoch': stoch}


def argmax_onehot(seed, probs):
  """Deterministic stand-in for outs.sample_onehot."""
  del seed
  return jax.nn.one_hot(jnp.argmax(probs, -1), probs.shape[-1],
                        dtype=jnp.float32)


def traced(method, det):
  """Jitted pure version of a module method. det=True traces it with the
  sampler replaced by argmax (a static argument, so both variants are cached
  separately and nothing stays patched outside the trace)."""
  def inner(state, *args, seed, det):
    original = outs.sample_onehot
    if det:
      outs.sample_onehot = argmax_onehot
    try:
      return nj.pure(method)(state, *args, seed=seed)[1]
    finally:
      outs.sample_onehot = original
  return jax.jit(inner, static_argnames=('det',))


class Model:

  def __init__(self):
    self.model = make_rssm()
    tokens, action, reset = make_inputs()
    carry = self.model.initial(B)
    # The prior (img*) parameters are created by losses(), which observe()
    # does not use.
    def build(carry, tokens, action, reset):
      _, entries = self.model.observe(carry, tokens, action, reset)
      return self.model.losses(entries)
    self.state = fill_params(build, carry, tokens, action, reset)
    self._observe = traced(self.model.observe, False)
    self._obs_step = traced(self.model.obs_step, False)

  def initial(self, batch):
    return self.model.initial(batch)

  def observe(self, carry, tokens, action, reset, seed=0, det=False):
    return self._observe(self.state, carry, tokens, action, reset,
                         seed=np.uint32([seed, 0]), det=det)

  def obs_step(self, carry, tokens, action, reset, seed=0, det=False):
    return self._obs_step(self.state, carry, tokens, action, reset,
                          seed=np.uint32([seed, 0]), det=det)


@pytest.fixture(scope='module')
def rssm():
  return Model()


# Why two kinds of scan-vs-loop test: nj.scan hands every step its own seed
# split from the outer one (after ninjax's own bookkeeping draws), so a Python
# loop cannot reproduce the scan's random draws without copying ninjax
# internals. Instead (a) with real sampling, feed each step the scan's own
# previous state (teacher forcing): deter and logit are deterministic
# functions of it and must match exactly; (b) with the sampler replaced by a
# deterministic argmax, the whole free-running rollout must match.


def test_observe_matches_step_loop_teacher_forced(rssm):
  tokens, action, reset = make_inputs(1)
  carry0 = random_carry(2)
  last, entries = rssm.observe(carry0, tokens, action, reset, seed=3)
  assert entries['deter'].shape == (B, T, 16)
  assert entries['stoch'].shape == (B, T, 4, 3)
  assert entries['logit'].shape == (B, T, 4, 3)
  for t in range(T):
    prev = carry0 if t == 0 else {
        'deter': entries['deter'][:, t - 1],
        'stoch': entries['stoch'][:, t - 1]}
    _, out = rssm.obs_step(prev, tokens[:, t], action[:, t], reset[:, t],
                           seed=100 + t)
    np.testing.assert_allclose(out['deter'], entries['deter'][:, t],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out['logit'], entries['logit'][:, t],
                               rtol=1e-5, atol=1e-5)
  # Samples are one-hot (up to the straight-through rounding).
  stoch = np.asarray(entries['stoch'])
  np.testing.assert_allclose(stoch, np.round(stoch), atol=1e-6)
  np.testing.assert_allclose(stoch.sum(-1), 1, atol=1e-6)
  # The final carry is the last entry.
  np.testing.assert_array_equal(last['deter'], entries['deter'][:, -1])
  np.testing.assert_array_equal(last['stoch'], entries['stoch'][:, -1])


def test_observe_matches_step_loop_deterministic(rssm):
  tokens, action, reset = make_inputs(4, reset_at=None)
  reset = reset.at[:, 0].set(False)  # Start from a nonzero carry.
  carry = random_carry(5)
  last, entries = rssm.observe(carry, tokens, action, reset, det=True)
  for t in range(T):
    carry, out = rssm.obs_step(carry, tokens[:, t], action[:, t],
                               reset[:, t], seed=t, det=True)
    for key in ('deter', 'stoch', 'logit'):
      np.testing.assert_allclose(out[key], entries[key][:, t], rtol=1e-5,
                                 atol=1e-5, err_msg=f'{key} at {t}')
  np.testing.assert_allclose(carry['deter'], last['deter'], rtol=1e-5,
                             atol=1e-6)


def test_is_first_resets_state(rssm):
  t0 = 3
  tokens, action, reset = make_inputs(6, reset_at=t0)
  carry0 = random_carry(7)
  _, full = rssm.observe(carry0, tokens, action, reset, seed=1)
  sl = lambda x: x[:, t0:]
  fresh_reset = jnp.zeros((B, T - t0), bool).at[:, 0].set(True)
  _, fresh = rssm.observe(rssm.initial(B), sl(tokens), sl(action),
                          fresh_reset, seed=2)
  # Real sampling: the reset step depends on nothing before it.
  for key in ('deter', 'logit'):
    np.testing.assert_allclose(full[key][:, t0], fresh[key][:, 0],
                               rtol=1e-5, atol=1e-6)
  # The action fed at the reset step is ignored.
  other = action.at[:, t0].set(jnp.roll(action[:, t0], 1, -1))
  _, full2 = rssm.observe(carry0, tokens, other, reset, seed=1)
  np.testing.assert_array_equal(full2['deter'][:, t0], full['deter'][:, t0])
  # Deterministic sampling: every later step matches the fresh sequence.
  _, full = rssm.observe(carry0, tokens, action, reset, det=True)
  _, fresh = rssm.observe(random_carry(8), sl(tokens), sl(action),
                          fresh_reset, det=True)
  for key in ('deter', 'stoch', 'logit'):
    np.testing.assert_allclose(full[key][:, t0:], fresh[key], rtol=1e-5,
                               atol=1e-5)
  # Without the reset, the same step differs (the state carried over).
  _, noreset = rssm.observe(
      carry0, tokens, action, reset.at[:, t0].set(False), det=True)
  assert np.abs(noreset['deter'][:, t0] - full['deter'][:, t0]).max() > 1e-3


def test_reset_per_row(rssm):
  tokens, action, reset = make_inputs(9)
  carry0 = random_carry(10)
  # Row 0 starts fresh at step 0, row 1 continues from carry0.
  reset = reset.at[1, 0].set(False)
  _, out = rssm.obs_step(carry0, tokens[:, 0], action[:, 0], reset[:, 0])
  _, row0 = rssm.obs_step(rssm.initial(B), tokens[:, 0],
                          jnp.zeros_like(action[:, 0]), jnp.ones((B,), bool))
  np.testing.assert_allclose(out['deter'][0], row0['deter'][0], rtol=1e-5,
                             atol=1e-6)
  assert np.abs(out['deter'][1] - row0['deter'][1]).max() > 1e-3


def test_imagine_shapes_and_img_step_consistency(rssm):
  model, state = rssm.model, rssm.state
  tokens, action, reset = make_inputs(11)
  _, entries = rssm.observe(model.initial(B), tokens, action, reset)
  start = {k: entries[k].reshape((B * T, *entries[k].shape[2:]))
           for k in ('deter', 'stoch')}
  policy = lambda feat: {
      'action': jnp.argmax(feat[:, :3], -1).astype(jnp.int32)}
  H = 4
  states, actions = jax.jit(lambda state, start: nj.pure(model.imagine)(
      state, start, policy, H, seed=3)[1])(state, start)
  assert states['deter'].shape == (B * T, H + 1, 16)
  assert states['stoch'].shape == (B * T, H + 1, 4, 3)
  assert actions['action'].shape == (B * T, H + 1)
  for key in ('deter', 'stoch'):
    assert states[key].dtype == entries[key].dtype == jnp.float32
    assert states[key].shape[2:] == entries[key].shape[2:]
  # The rollout starts at the given states.
  np.testing.assert_array_equal(states['deter'][:, 0], start['deter'])
  np.testing.assert_array_equal(states['stoch'][:, 0], start['stoch'])
  # Each step is img_step applied to the previous state and its action.
  img_step = jax.jit(lambda state, prev, act, seed: nj.pure(model.img_step)(
      state, prev, act, seed=seed)[1])
  for t in range(H):
    prev = {k: states[k][:, t] for k in ('deter', 'stoch')}
    act = rssm_lib.prep_action(ACT, {'action': actions['action'][:, t]})
    np.testing.assert_array_equal(
        actions['action'][:, t], policy(model.feat(prev))['action'])
    new, _ = img_step(state, prev, act, np.uint32([t, 0]))
    np.testing.assert_allclose(new['deter'], states['deter'][:, t + 1],
                               rtol=1e-5, atol=1e-6)
  # feat concatenates deter and flattened stoch.
  feat = model.feat(states)
  assert feat.shape == (B * T, H + 1, 16 + 12)


def test_core_is_a_submodule_holding_its_parameters(rssm):
  """The block GRU is the submodule `core`: its parameters are all under
  its path, no other layer's are. Checkpoint names from when its layers
  sat directly under the RSSM map onto it, for parameters and for the
  optimizer moments that carry a parameter's name; other names stay."""
  model, state = rssm.model, rssm.state
  core = nj.pure(lambda: model.core.values)(state)[1]
  assert {k.split('/')[0] for k in core} == {
      'indeter', 'instoch', 'inact', 'indeternorm', 'instochnorm',
      'inactnorm', 'dyn0', 'dyn0norm', 'gates'}
  inside = {k for k in state if k.startswith('rssm/core/')}
  assert inside == {f'rssm/core/{k}' for k in core}
  assert {k.split('/')[1] for k in set(state) - inside} == {
      'obs0', 'obs0norm', 'obslogit', 'img0', 'img0norm', 'img1',
      'img1norm', 'imglogit'}
  for key in state:
    old = key.replace('rssm/core/', 'rssm/')
    assert model.current_name(old) == key
    assert model.current_name(key) == key
    assert model.current_name(f'opt/1/mom/{old}') == f'opt/1/mom/{key}'
  assert model.current_name('other/gates/kernel') == 'other/gates/kernel'


def test_prep_action():
  space = {'b': elements.Space(np.int32, (), 0, 4),
           'a': elements.Space(np.float32, (2,), -1, 1)}
  act = {'b': jnp.array([[0, 3]]), 'a': jnp.array([[[0.5, -3.0], [2.0, 0.1]]])}
  got = np.asarray(rssm_lib.prep_action(space, act))
  # Keys in sorted order: continuous 'a' clipped, then one-hot 'b'.
  want = [[[0.5, -1, 1, 0, 0, 0], [1, 0.1, 0, 0, 0, 1]]]
  np.testing.assert_allclose(got, want)


# Encoder and decoder.

OBS = {
    'image': elements.Space(np.uint8, (16, 16, 3)),
    'vec': elements.Space(np.float32, (5,)),
    'reward': elements.Space(np.float32),
    'is_first': elements.Space(bool),
    'is_last': elements.Space(bool),
    'is_terminal': elements.Space(bool)}
NETS = dict(units=8, layers=1, depth=2, mults=(2, 3), kernel=5)
# Decoder features: 6 deterministic units (2 blocks) and 4 stochastic.


def make_obs(seed, bshape=(B, 3)):
  rng = np.random.default_rng(seed)
  obs = {k: np.zeros((*bshape, *s.shape), s.dtype) for k, s in OBS.items()}
  obs['image'] = rng.integers(0, 256, (*bshape, 16, 16, 3)).astype(np.uint8)
  obs['vec'] = rng.normal(0, 5, (*bshape, 5)).astype(np.float32)
  return obs


def pure_jit(method, **kw):
  """jit(nj.pure(method)); eager convs compile every slice separately."""
  return jax.jit(lambda state, *a: nj.pure(method)(state, *a, **kw))


def test_encoder_decoder_shapes():
  enc = rssm_lib.Encoder(OBS, **NETS, name='enc')
  dec = rssm_lib.Decoder(OBS, 6, bspace=2, **NETS, name='dec')
  assert enc.imgkeys == ['image'] and enc.veckeys == ['vec']
  obs = make_obs(0)
  state = fill_params(enc, obs)
  _, tokens = pure_jit(enc)(state, obs)
  # MLP units + CNN output (16 / 2^2)^2 pixels x depth * mults[-1] channels.
  assert tokens.shape == (B, 3, 8 + 4 * 4 * 6)
  step = {k: v[:, 0] for k, v in obs.items()}
  _, tokens1 = jax.jit(lambda s, o: nj.pure(enc)(s, o, 1))(state, step)
  np.testing.assert_allclose(tokens1, tokens[:, 0], rtol=1e-5, atol=1e-5)
  feat = jnp.asarray(np.random.default_rng(1).normal(size=(B, 3, 10)),
                     jnp.float32)
  state = fill_params(dec, feat)
  _, (means, preds, losses) = pure_jit(lambda f, o: decode(dec, f, o))(
      state, feat, obs)
  assert set(means) == {'image', 'vec'}
  assert means['image'].shape == preds['image'].shape == (B, 3, 16, 16, 3)
  assert means['vec'].shape == preds['vec'].shape == (B, 3, 5)
  assert losses['image'].shape == losses['vec'].shape == (B, 3)


def decode(dec, feat, obs, weights=None):
  dists = dec(feat)
  means = {k: d.mean for k, d in dists.items()}
  preds = {k: d.pred() for k, d in dists.items()}
  losses = {k: d.loss(obs[k]) for k, d in dists.items()}
  if weights is not None:
    losses['weighted'] = dists['image'].loss(obs['image'], weights)
  return means, preds, losses


def test_encoder_decoder_variants_agree():
  # The fast conv formulations equal the direct ones, given the same
  # parameters.
  obs = make_obs(2)
  feat = jnp.asarray(np.random.default_rng(5).normal(size=(B, 3, 10)),
                     jnp.float32)
  results = []
  for fast in (True, False):
    enc = rssm_lib.Encoder(OBS, **NETS, fast=fast, name='enc')
    dec = rssm_lib.Decoder(OBS, 6, bspace=2, **NETS, fast=fast, name='dec')
    def both(o, f):
      return enc(o), {k: d.mean for k, d in dec(f).items()}
    state = fill_params(both, obs, feat)  # Equal for both variants.
    results.append(pure_jit(both)(state, obs, feat)[1])
  (tok1, dec1), (tok2, dec2) = results
  np.testing.assert_allclose(tok1, tok2, rtol=1e-4, atol=1e-5)
  for key in dec1:
    np.testing.assert_allclose(dec1[key], dec2[key], rtol=1e-4, atol=1e-5)


def test_decoder_losses_by_hand():
  dec = rssm_lib.Decoder(OBS, 6, bspace=2, **NETS, name='dec')
  rng = np.random.default_rng(3)
  feat = jnp.asarray(rng.normal(size=(B, 3, 10)), jnp.float32)
  obs = make_obs(4)
  w = rng.uniform(0, 2, (B, 3, 16, 16, 3)).astype(np.float32)
  _, (means, preds, losses) = pure_jit(
      lambda f, o, w: decode(dec, f, o, w))(
          fill_params(dec, feat), feat, obs, w)
  mean = np.asarray(means['image'], np.float64)
  err = (mean - obs['image'] / 255.0) ** 2
  np.testing.assert_allclose(
      losses['weighted'], (w * err).sum((-3, -2, -1)), rtol=1e-5)
  np.testing.assert_allclose(losses['image'], err.sum((-3, -2, -1)), rtol=1e-5)
  np.testing.assert_allclose(preds['image'], mean, rtol=1e-6)
  # Vectors: squared error in symlog space, prediction back in symexp.
  vmean = np.asarray(means['vec'], np.float64)
  target = obs['vec'].astype(np.float64)
  want = ((vmean - np.sign(target) * np.log1p(np.abs(target))) ** 2).sum(-1)
  np.testing.assert_allclose(losses['vec'], want, rtol=1e-5)
  np.testing.assert_allclose(
      preds['vec'], np.sign(vmean) * np.expm1(np.abs(vmean)), rtol=1e-5)
