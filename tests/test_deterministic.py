"""run.deterministic: the same command gives the same run. Two runs that
differ only in timing (a slowed env, reports and saves mid-run) end with
equal parameters, equal scores.jsonl and equal metrics.jsonl (timing
fields aside); without the mode the same pair differs, which the same
comparison catches."""

import json
import os
import pathlib
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Metrics that measure time or memory, not the run.
TIMING = re.compile(
    r'^(fps/|usage/|timer/|learner/(wait|dispatch)_frac|replay/sample_ms|'
    r'replay/cache_seconds)')


def run(logdir, jax_cache, *args, configs=('debug',), seed=3):
  cmd = [sys.executable, 'dreamerv3/main.py', '--configs', *configs,
         '--task', 'dummy_vector', '--logdir', str(logdir),
         '--run.envs', '2', '--run.steps', '600', '--seed', str(seed),
         '--jax.platform', 'cpu', '--logger.outputs', 'jsonl',
         '--run.video_every', '0', '--jax.cache_dir', str(jax_cache), *args]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=dict(os.environ))
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def final_params(logdir):
  latest = (logdir / 'ckpt' / 'latest').read_text().strip()
  state = pickle.loads((logdir / 'ckpt' / latest / 'agent.pkl').read_bytes())
  return {k: np.asarray(v) for k, v in state.items()}


def rows(path):
  out = []
  for line in path.read_text().splitlines():
    row = json.loads(line)
    out.append({k: v for k, v in row.items() if not TIMING.match(k)})
  return out


def differences(a, b, members=('',)):
  """What differs between two runs' logdirs (empty: the same run)."""
  found = []
  for member in members:
    for name in ('scores.jsonl', 'metrics.jsonl'):
      if rows(a / member / name) != rows(b / member / name):
        found.append(f'{member}{name}')
  pa, pb = final_params(a), final_params(b)
  if pa.keys() != pb.keys():
    found.append('parameter keys')
  else:
    found += [k for k in pa if not np.array_equal(pa[k], pb[k])]
  return found


# Reports, saves and logs fall mid-run (600 steps); one run's env is slowed.
SCHEDULE = ['--run.log_every', '100', '--run.save_every', '250',
            '--run.report_every', '150']


def test_the_same_command_gives_the_same_run(tmp_path, jax_cache):
  fast, slow = tmp_path / 'fast', tmp_path / 'slow'
  run(fast, jax_cache, '--run.deterministic', 'True', *SCHEDULE)
  run(slow, jax_cache, '--run.deterministic', 'True', *SCHEDULE,
      '--env.dummy.work_ms', '15')
  assert differences(fast, slow) == []
  # Reports and saves did happen mid-run, at the same steps in both.
  reports = [r['step'] for r in rows(fast / 'metrics.jsonl')
             if any(k.startswith('report/') for k in r)]
  assert reports and min(reports) < 600
  assert len(list((fast / 'ckpt').glob('2*'))) >= 2


@pytest.mark.slow
def test_without_the_mode_timing_changes_the_run(tmp_path, jax_cache):
  """The comparison above can fail: wall-clock schedules (a report every
  second, a save every two) with one env slowed give another run."""
  fast, slow = tmp_path / 'fast', tmp_path / 'slow'
  clock = ['--run.log_every', '1', '--run.save_every', '2',
           '--run.report_every', '1']
  run(fast, jax_cache, *clock)
  run(slow, jax_cache, *clock, '--env.dummy.work_ms', '15')
  assert differences(fast, slow)


@pytest.mark.slow
def test_the_same_run_with_seeds_envs_in_processes_and_extensions(
    tmp_path, jax_cache):
  """Two seeds as one program, each env in its own process, prioritized
  replay and latent reward disagreement, prefetch on."""
  args = ['--run.deterministic', 'True', *SCHEDULE, '--run.seeds', '2',
          '--run.parallel_envs', 'True', '--run.prefetch', 'True']
  configs = ('debug', 'uncertainty', 'disagreement_exp_decay')
  fast, slow = tmp_path / 'fast', tmp_path / 'slow'
  run(fast, jax_cache, *args, configs=configs)
  run(slow, jax_cache, *args, '--env.dummy.work_ms', '15', configs=configs)
  assert differences(fast, slow, members=('seed3', 'seed4')) == []


def test_the_mode_refuses_the_parallel_script(tmp_path):
  out = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
       '--logdir', str(tmp_path / 'run'), '--script', 'parallel',
       '--run.deterministic', 'True'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and 'run.deterministic' in lines[0], out.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_members_follow_their_one_seed_runs(tmp_path, jax_cache):
  """Seeds 3 and 4 as one program against each run alone: the same
  episodes and losses until float rounding of the vmapped kernels parts
  them. Prints how far they stay equal."""
  args = ['--run.deterministic', 'True', '--run.log_every', '10',
          '--run.report_every', '0', '--run.save_every', '100000']
  run(tmp_path / 'both', jax_cache, *args, '--run.seeds', '3,4')
  for seed in (3, 4):
    run(tmp_path / f'alone{seed}', jax_cache, *args, seed=seed)
    member = rows(tmp_path / 'both' / f'seed{seed}' / 'metrics.jsonl')
    alone = rows(tmp_path / f'alone{seed}' / 'metrics.jsonl')
    episodes = lambda r: [(x['step'], x['episode/score']) for x in r
                          if 'episode/score' in x]
    em, ea = episodes(member), episodes(alone)
    same = next((i for i, (a, b) in enumerate(zip(em, ea)) if a != b),
                min(len(em), len(ea)))
    losses = lambda r: [(x['step'], x['train/loss/dyn'], x['train/loss/rew'])
                        for x in r if 'train/loss/dyn' in x]
    lm, la = losses(member), losses(alone)
    assert [x[0] for x in lm] == [x[0] for x in la]
    close = 0
    for (_, *a), (_, *b) in zip(lm, la):
      if not np.allclose(a, b, rtol=1e-4, atol=1e-6):
        break
      close += 1
    print(f'seed {seed}: {same} of {len(em)} episodes equal; losses within '
          f'1e-4 for {close} of {len(lm)} log rows'
          + (f' (first apart at step {lm[close][0]}: {lm[close][1:]} vs '
             f'{la[close][1:]})' if close < len(lm) else ''))
    # Before training the runs are the same program: every episode that
    # ended before the first update is equal, and the first logged losses
    # (the first updates) agree to float tolerance.
    first_update = lm[0][0]
    assert all(a == b for a, b in zip(em, ea) if a[0] < first_update)
    assert close >= 1
