"""End-to-end runs of dreamerv3/main.py in subprocesses (debug config).

The runs share one JAX compilation cache, so only the first process pays
the full compile time. Tests share module fixtures: the short run, the
killed and resumed run and the eval run on its logdir.
"""

import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ['--configs', 'debug', '--task', 'dummy_vector']


CACHE = {}


@pytest.fixture(scope='module')
def env(jax_cache):
  env = dict(os.environ)
  # The session's compilation cache for the module's runs (--jax.cache_dir
  # below): other tests' runs of the same programs skip their compile.
  CACHE['dir'] = str(jax_cache)
  env['PYTHONUNBUFFERED'] = '1'  # Keep stdout of killed runs.
  return env


def command(logdir, *args):
  cache = ['--jax.cache_dir', CACHE['dir']] if 'dir' in CACHE else []
  return [sys.executable, 'dreamerv3/main.py', *BASE, *cache, '--logdir',
          str(logdir), *args]


def run(env, logdir, *args, timeout=300):
  proc = subprocess.run(
      command(logdir, *args), cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=timeout)
  return proc


def check_ok(proc):
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def read_jsonl(path, start=0):
  """Parsed lines of a JSON-lines file, from byte offset start on."""
  with open(path, 'rb') as f:
    f.seek(start)
    return [json.loads(line) for line in f.read().decode().splitlines()
            if line.strip()]


def values(lines, key):
  return [line[key] for line in lines if key in line]


def max_step(path):
  """Largest step in a JSON-lines file so far (-1 if none)."""
  try:
    text = pathlib.Path(path).read_text()
  except FileNotFoundError:
    return -1
  steps = re.findall(r'^\{"step": (\d+)', text, re.M)
  return max(map(int, steps), default=-1)


def ckpt_step(logdir):
  """Step of the checkpoint that ckpt/latest points to, or None."""
  latest = pathlib.Path(logdir) / 'ckpt' / 'latest'
  if not latest.exists():
    return None
  name = latest.read_text().strip()
  return int(name.rsplit('-', 1)[1])


def check_complete_ckpt(logdir):
  name = (pathlib.Path(logdir) / 'ckpt' / 'latest').read_text().strip()
  folder = pathlib.Path(logdir) / 'ckpt' / name
  assert (folder / 'done').exists()
  for key in ('agent', 'step', 'replay', 'limiter'):
    assert list(folder.glob(f'{key}*')), (key, sorted(folder.iterdir()))
  return folder


def tree_hash(path):
  """Hash of every file (name and content) under path."""
  digest = hashlib.sha256()
  for file in sorted(pathlib.Path(path).rglob('*')):
    digest.update(str(file.relative_to(path)).encode())
    if file.is_file():
      digest.update(file.read_bytes())
  return digest.hexdigest()


# (1) A short run writes everything.

@pytest.fixture(scope='module')
def short_run(env, tmp_path_factory):
  logdir = tmp_path_factory.mktemp('short') / 'run'
  proc = run(env, logdir, '--run.steps', '140')
  check_ok(proc)
  return logdir, proc


def test_short_run_writes_outputs(short_run):
  logdir, proc = short_run
  assert 'Start training at step 0 ' in proc.stdout
  config = (logdir / 'config.yaml').read_text()
  assert 'dummy_vector' in config
  metrics = read_jsonl(logdir / 'metrics.jsonl')
  keys = set().union(*metrics)
  assert {'train/loss/rec', 'train/loss/rew', 'train/loss/dyn',
          'train/loss/policy', 'train/loss/value'} <= keys
  scores = read_jsonl(logdir / 'scores.jsonl')
  assert scores and all(set(s) <= {
      'step', 'episode/score', 'episode/length'} for s in scores)
  # dummy_vector in debug: 20 steps per episode, reward 0 or 1 per step.
  assert values(scores, 'episode/length') and set(
      values(scores, 'episode/length')) == {20.0}
  assert all(0 <= s <= 20 for s in values(scores, 'episode/score'))
  folder = check_complete_ckpt(logdir)
  assert ckpt_step(logdir) == 140
  assert f'Saved checkpoint: {folder}' in proc.stdout
  # Replay chunks of 64 steps: 2 envs x 70 steps fill one chunk each.
  assert len(list((logdir / 'replay').glob('*.npz'))) == 2
  assert not proc.stderr.count('Traceback')


# (2) Kill at any moment, then resume.

@pytest.fixture(scope='module')
def resumed(env, tmp_path_factory):
  logdir = tmp_path_factory.mktemp('resume') / 'run'
  tmp = logdir.parent
  args = ['--run.save_every', '10']
  log = open(tmp / 'killed.out', 'w')
  proc = subprocess.Popen(
      command(logdir, '--run.steps', '1e6', *args), cwd=ROOT, env=env,
      stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 240
    while ckpt_step(logdir) is None:
      assert proc.poll() is None, (tmp / 'killed.out').read_text()[-3000:]
      assert time.time() < deadline, 'no checkpoint within 240 s'
      time.sleep(0.5)
    # Let it log a step past the checkpoint, then kill it.
    while max_step(logdir / 'metrics.jsonl') <= ckpt_step(logdir):
      assert proc.poll() is None, (tmp / 'killed.out').read_text()[-3000:]
      assert time.time() < deadline, 'no progress after the checkpoint'
      time.sleep(0.5)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
  assert proc.returncode == -signal.SIGKILL
  killed_out = (tmp / 'killed.out').read_text()
  saved = ckpt_step(logdir)  # The last one written before the kill.
  folder = check_complete_ckpt(logdir)
  killed_max = max_step(logdir / 'metrics.jsonl')
  metrics_size = (logdir / 'metrics.jsonl').stat().st_size
  proc = run(env, logdir, '--run.steps', str(saved + 60), *args)
  return dict(
      logdir=logdir, saved=saved, folder=folder, killed_out=killed_out,
      killed_max=killed_max,
      proc=proc, metrics=read_jsonl(logdir / 'metrics.jsonl', metrics_size))


def test_resume_loads_checkpoint(resumed):
  proc, folder, saved = resumed['proc'], resumed['folder'], resumed['saved']
  check_ok(proc)
  assert saved > 0
  assert f'Loaded checkpoint: {folder}' in proc.stdout
  match = re.search(r'Start training at step ([\d,]+)', proc.stdout)
  assert match, proc.stdout[-3000:]
  assert int(match.group(1).replace(',', '')) == saved
  assert ckpt_step(resumed['logdir']) >= saved + 60
  check_complete_ckpt(resumed['logdir'])


def test_killed_run_went_past_checkpoint(resumed):
  # Otherwise the resume test would not show that later steps are dropped.
  assert resumed['killed_max'] > resumed['saved']


def test_resume_replay_not_duplicated(resumed):
  # Every env step adds one transition and nothing is evicted (capacity
  # 1e4), so replay holds exactly `step` transitions: more means the
  # resumed run re-added stored data, fewer means it lost the replay.
  lines = [l for l in resumed['metrics'] if 'replay/size' in l]
  assert lines, resumed['metrics']
  first = lines[0]
  assert first['step'] <= resumed['saved'] + 10  # Logged right after resume.
  for line in lines:
    assert line['replay/size'] == line['step'], line
    assert line['replay/inserts'] == line['step'], line


def test_resume_continues_metrics(resumed):
  steps = values(resumed['metrics'], 'step')
  assert steps and min(steps) > resumed['saved']
  assert 'train/loss/rec' in set().union(*resumed['metrics'])


# (3) Evaluate the resumed run's checkpoint.

@pytest.fixture(scope='module')
def evaluated(env, resumed):
  logdir = resumed['logdir']
  start = (logdir / 'scores.jsonl').stat().st_size
  final = check_complete_ckpt(logdir)
  proc = run(env, logdir, '--script', 'eval_only', '--run.eval_eps', '2')
  return dict(proc=proc, folder=final,
              scores=read_jsonl(logdir / 'scores.jsonl', start))


def test_eval_only(evaluated):
  proc = evaluated['proc']
  check_ok(proc)
  assert f"Loaded checkpoint: {evaluated['folder']}" in proc.stdout
  assert 'Evaluated 2 episodes' in proc.stdout
  scores = values(evaluated['scores'], 'eval_episode/score')
  assert scores and all(0 <= s <= 20 for s in scores)
  assert not values(evaluated['scores'], 'episode/score')


def test_eval_only_logs_every_episode(evaluated):
  # Both episodes end at the same logger step (eval does not advance it).
  scores = values(evaluated['scores'], 'eval_episode/score')
  assert len(scores) == 2
  assert len(values(evaluated['scores'], 'eval_episode/length')) == 2


# (4) Bad inputs: exit 2, one clear line, no traceback, logdir untouched.

BAD = {
    'unknown_block': (['--configs', 'debug', 'size3m'], "'size3m'"),
    'unknown_key': (['--agent.dyn.detr', '64'], 'agent.dyn.detr'),
    'wrong_type': (['--batch_size', 'abc'], 'batch_size'),
    'wrong_bool': (['--jax.jit', 'maybe'], 'jax.jit'),
    'unknown_script': (['--script', 'trian'], "'trian'"),
    'unknown_suite': (['--task', 'nope_x'], 'nope_x'),
    'unknown_gym_env': (['--task', 'gym_NoSuchEnv-v0'], 'NoSuchEnv-v0'),
    'twohot_layout': (['--agent.value.layout', 'linear'], 'agent.value.layout'),
    'ratio_nan': (['--run.train_ratio', 'nan'], 'run.train_ratio'),
    'replay_empty': (['--replay.size', '0'], 'replay.size'),
    'steps_negative': (['--run.steps', '-1'], 'run.steps'),
    'deter_blocks': (['--agent.dyn.deter', '30'], 'agent.dyn.deter'),
    'mask_no_images': (['--task', 'dummy_vector', '--masking.enabled',
                        'True'], 'masking.enabled'),
    'image_size': (['--task', 'dummy_image', '--env.size', '60,60'],
                   'agent.enc.mults'),
    'int_inf': (['--batch_size', 'inf'], 'batch_size'),
    'devices': (['--jax.train_devices', '3'], 'jax.train_devices'),
    'replay_device': (['--replay.device', 'gpu'], 'replay.device'),
    'compute_dtype': (['--jax.compute_dtype', 'float8'], 'jax.compute_dtype'),
}


def check_error(proc, culprit=None, one_line=True):
  assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines and lines[0].startswith('Error: '), proc.stderr
  if one_line:
    assert len(lines) == 1, proc.stderr
  if culprit:
    assert culprit in proc.stderr


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_input_fresh_logdir(env, tmp_path, case):
  args, culprit = BAD[case]
  logdir = tmp_path / 'new'
  proc = run(env, logdir, *args, timeout=120)
  check_error(proc, culprit)
  assert not logdir.exists()


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_input_existing_logdir(env, short_run, case):
  logdir, _ = short_run
  before = tree_hash(logdir)
  proc = run(env, logdir, *BAD[case][0], timeout=120)
  # An unknown task on this logdir may be reported as a task mismatch.
  check_error(proc, one_line=False)
  assert tree_hash(logdir) == before


def test_incompatible_logdir(env, short_run):
  logdir, _ = short_run
  before = tree_hash(logdir)
  proc = run(env, logdir, '--agent.dyn.deter', '64', timeout=120)
  # One error, plus one line per mismatching key.
  check_error(proc, 'agent.dyn.deter', one_line=False)
  assert 'logdir has 32, now 64' in proc.stderr
  assert tree_hash(logdir) == before


def test_bad_logger_output(env, tmp_path):
  logdir = tmp_path / 'new'
  proc = run(env, logdir, '--logger.outputs', 'terminal,nope', timeout=240)
  check_error(proc, "'nope'")
  assert not logdir.exists()


def test_bad_replay_chunksize(env, tmp_path):
  logdir = tmp_path / 'new'
  proc = run(env, logdir, '--replay.chunksize', '4', timeout=240)
  check_error(proc, 'chunksize')
  assert not logdir.exists()


# (5) Train with evaluation.

def test_train_eval(env, tmp_path):
  logdir = tmp_path / 'run'
  proc = run(env, logdir, '--script', 'train_eval', '--run.steps', '60')
  check_ok(proc)
  assert 'Evaluation: mean score' in proc.stdout
  scores = read_jsonl(logdir / 'scores.jsonl')
  evals = values(scores, 'eval_episode/score')
  assert evals and all(0 <= s <= 20 for s in evals)
  assert values(scores, 'episode/score')
  assert set(values(scores, 'eval_episode/length')) == {20.0}
  check_complete_ckpt(logdir)


# (6) Asking for a GPU on a machine without one.

@pytest.fixture(scope='module')
def cuda_run(env, tmp_path_factory):
  logdir = tmp_path_factory.mktemp('cuda') / 'run'
  proc = run(env, logdir, '--jax.platform', 'cuda', '--run.steps', '10',
             timeout=240)
  if proc.returncode == 0 and 'JAX platform: gpu' in proc.stdout:
    pytest.skip('this machine has a CUDA GPU')
  return logdir, proc


def test_cuda_platform_fails(cuda_run):
  logdir, proc = cuda_run
  assert proc.returncode != 0
  assert not logdir.exists()


def test_cuda_platform_message(cuda_run):
  _, proc = cuda_run
  check_error(proc, 'cuda')


def test_resume_after_upgrade_adds_structural_keys(env, short_run, tmp_path):
  """A logdir from a version without some structural keys resumes: keys it
  lacks are not compared unless their absence meant other behaviour."""
  import shutil
  import ruamel.yaml as yaml
  logdir = tmp_path / 'old'
  shutil.copytree(short_run[0], logdir)
  path = logdir / 'config.yaml'
  data = yaml.YAML(typ='safe').load(path.read_text())
  del data['agent']['dec']['fast']  # Structural, added in some version.
  del data['replay']['fracs']['recency']
  with path.open('w') as f:
    yaml.YAML(typ='safe').dump(data, f)
  proc = run(env, logdir, '--run.steps', '160')
  check_ok(proc)
  assert 'Loaded checkpoint' in proc.stdout
  assert ckpt_step(logdir) >= 160
