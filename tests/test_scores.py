"""The score tool scripts/scores.py on small hand-written logdirs."""

import gzip
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / 'scripts' / 'scores.py'
_spec = importlib.util.spec_from_file_location('scores', SCRIPT)
scores = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scores)


def make_logdir(path, task, seed, ys, steps=None, config_extra=''):
  """A logdir with one scores.jsonl line per episode and a config.yaml."""
  path = pathlib.Path(path)
  path.mkdir(parents=True)
  (path / 'config.yaml').write_text(
      f'task: {task}\nseed: {seed}\n{config_extra}')
  steps = steps or [100 * (i + 1) for i in range(len(ys))]
  lines = [json.dumps({'step': s, 'episode/score': y, 'episode/length': 10})
           for s, y in zip(steps, ys)]
  (path / 'scores.jsonl').write_text('\n'.join(lines) + '\n')
  return path


def run_main(argv, capsys):
  code = scores.main([str(a) for a in argv])
  out = capsys.readouterr()
  return code, out.out, out.err


# Statistics against hand computation.

def test_final_score_is_mean_of_last_n():
  ys = list(range(1, 13))
  assert scores.final_score(ys, 10) == pytest.approx(7.5)  # mean(3..12)
  assert scores.final_score(ys, 3) == pytest.approx(11.0)
  assert scores.final_score([4.0, 6.0], 10) == pytest.approx(5.0)


def test_human_normalized_reference_scores():
  # Pong: random -20.7, human 14.6; Breakout: random 1.7, human 30.5.
  assert scores.ATARI_SCORES['pong'] == (-20.7, 14.6)
  assert scores.ATARI_SCORES['breakout'] == (1.7, 30.5)
  assert len(scores.ATARI_SCORES) == 57
  assert scores.human_normalized('atari100k_pong', -3.05) == pytest.approx(0.5)
  assert scores.human_normalized('atari_breakout', 16.1) == pytest.approx(0.5)
  assert scores.human_normalized('atari_breakout', 30.5) == pytest.approx(1.0)
  assert scores.human_normalized('atari_ms_pacman', 307.3) == pytest.approx(0)
  assert scores.human_normalized('atari100k_battle_zone', 37187.5) == (
      pytest.approx(1.0))
  assert scores.human_normalized('minatar_breakout', 10.0) is None
  assert scores.human_normalized('atari_not_a_game', 10.0) is None


@pytest.mark.parametrize('values, expected', [
    ([8, 1, 7, 2, 6, 3, 5, 4], 4.5),        # n=8: keep 3,4,5,6
    ([10, 1, 4, 3, 100], 17 / 3),           # n=5: drop 1 each end, keep 3
    ([0, 1, 2, 3, 4, 100], 2.5),            # n=6: drop 1 each end, keep 4
    ([1, 2, 3, 4, 5, 6, 70], 4.0),          # n=7: drop 1 each end, keep 5
    ([1, 2, 9], 4.0),                       # n=3: floor(3/4)=0, keep all
])
def test_iqm_drops_floor_quarter_each_end(values, expected):
  assert scores.iqm(values) == pytest.approx(expected)


def test_aggregate_mean_median_iqm():
  per_game = {'pong': [0.5, 1.5], 'breakout': [0.0], 'alien': [2.0, 4.0, 6.0]}
  agg = scores.aggregate(per_game)
  # Per-game means 1.0, 0.0, 4.0; pooled sorted [0, .5, 1.5, 2, 4, 6].
  assert agg['games'] == 3 and agg['runs'] == 6
  assert agg['mean'] == pytest.approx(5 / 3)
  assert agg['median'] == pytest.approx(1.0)
  assert agg['iqm'] == pytest.approx((0.5 + 1.5 + 2 + 4) / 4)


def test_smooth_trailing_average():
  assert scores.smooth([2, 4, 6, 8], 2).tolist() == [2, 3, 5, 7]
  assert scores.smooth([2, 4, 6], 1).tolist() == [2, 4, 6]


# Published protocols against slow references.

def slow_bins(xs, ys, width, reached):
  """Per bin edge k * width up to reached: the mean of the scores whose x
  is in (edge - width, edge], None when there is none."""
  out = []
  edge = width
  while edge <= reached:
    inside = [y for x, y in zip(xs, ys) if edge - width < x <= edge]
    out.append((edge, sum(inside) / len(inside) if inside else None))
    edge += width
  return out


@pytest.mark.parametrize('seed', range(5))
def test_bin_scores_against_loops(seed):
  rng = np.random.default_rng(seed)
  xs = np.sort(rng.choice(np.arange(1, 500), 40, replace=False)).astype(float)
  xs[:3] = [100, 200, 300]  # Ends on a bin edge belong to that bin.
  xs.sort()
  ys = rng.normal(0, 10, len(xs))
  reached = xs.max() + rng.integers(0, 150)
  edges, means = scores.bin_scores(xs, ys, 100, reached)
  expected = slow_bins(xs, ys, 100, reached)
  assert edges.tolist() == [e for e, _ in expected]
  for mean, (_, value) in zip(means, expected):
    assert (np.isnan(mean) and value is None) or mean == pytest.approx(value)


def test_bin_scores_default_reach_and_empty():
  edges, means = scores.bin_scores([50, 150, 250], [1, 2, 3], 100)
  assert edges.tolist() == [100, 200]  # The bin of 250 is not complete.
  assert means.tolist() == [1, 2]
  edges, means = scores.bin_scores([], [], 100, 250)
  assert edges.tolist() == [100, 200] and np.isnan(means).all()


def test_dmc_runs_are_binned_as_the_published_curves(tmp_path, capsys):
  # Env steps = step x repeat 2; bins of 10k env steps.
  steps = [2000, 4000, 5000, 6000, 9000, 12500, 14000, 15000]
  ys = [10, 20, 30, 40, 50, 60, 70, 80]
  logdir = make_logdir(tmp_path / 'walker' / 'seed0', 'dmc_walker_walk', 0,
                       ys, steps=steps,
                       config_extra='env: {dmc: {repeat: 2}}\n')
  run = scores.load_run(logdir)
  xs = [s * 2 for s in steps]
  expected = [(e, v) for e, v in slow_bins(xs, ys, 10000, max(xs))
              if v is not None]
  assert run.xs.tolist() == [e for e, _ in expected]
  assert run.ys.tolist() == pytest.approx([v for _, v in expected])
  assert run.steps == 30000
  # A run that logged metrics later than its last episode reached further.
  (logdir / 'metrics.jsonl').write_text(
      '{"step": 15000, "fps/env": 1.0}\n{"step": 16000, "fps/env": 2.0}\n'
      '{"step": 17000, "fps/')
  run = scores.load_run(logdir)
  assert run.steps == 32000 and run.xs.tolist()[-1] == 30000
  # Published DMC points are bins already; the final is over the last bins.
  path = tmp_path / 'dmc_proprio-tiny.json.gz'
  with gzip.open(path, 'wt') as f:
    json.dump([{'task': 'dmc_walker_walk', 'method': 'dreamerv3', 'seed': 0,
                'xs': [10000, 20000, 30000, 40000],
                'ys': [1.0, 2.0, 3.0, 4.0]}], f)
  code, out, _ = run_main([logdir, '--baseline', path, '--last', '2',
                           '--json'], capsys)
  rows = {r['published']: r for r in json.loads(out)['rows']}
  ours = [v for _, v in expected]
  assert rows[False]['final'] == pytest.approx(sum(ours[-2:]) / 2)
  assert rows[True]['final'] == pytest.approx(2.5)  # Cut at 32k: 2 and 3.


def slow_window(xs, ys, lo, hi):
  inside = [y for x, y in zip(xs, ys) if lo < x <= hi]
  if inside:
    return sum(inside) / len(inside)
  before = [y for x, y in zip(xs, ys) if x <= hi]
  return before[-1]


def test_atari100k_score_is_the_last_10k_frames(tmp_path, capsys):
  rng = np.random.default_rng(0)
  # Frames = step x repeat 4: episodes ending up to 400k frames.
  steps = np.sort(rng.choice(np.arange(1, 100001), 60, replace=False))
  ys = rng.normal(0, 5, len(steps)).round(2).tolist()
  steps[-1] = 100000
  logdir = make_logdir(tmp_path / 'pong' / 'seed0', 'atari100k_pong', 0, ys,
                       steps=steps.tolist(),
                       config_extra='env: {atari: {repeat: 4}}\n')
  run = scores.load_run(logdir)
  frames = (steps * 4).tolist()
  assert scores.run_score(run) == pytest.approx(
      slow_window(frames, ys, 390000, 400000))
  # The published atari100k runs are scored over the same window.
  path = tmp_path / 'atari100k-tiny.json.gz'
  pub = [[1000, 355000, 389000, 391000, 395000, 399999], [1, 9, 2, 3, 5, 7]]
  with gzip.open(path, 'wt') as f:
    json.dump([{'task': 'atari_pong', 'method': 'dreamerv3', 'seed': 0,
                'xs': pub[0], 'ys': pub[1]}], f)
  [published] = scores.load_baseline(path)
  assert scores.run_score(published) == pytest.approx(
      slow_window(*pub, 390000, 400000))  # (3 + 5 + 7) / 3.
  code, out, _ = run_main([logdir, '--baseline', path, '--json'], capsys)
  rows = {r['published']: r for r in json.loads(out)['rows']}
  assert rows[True]['final'] == pytest.approx(5.0)
  assert rows[False]['final'] == pytest.approx(
      slow_window(frames, ys, 390000, 400000))
  # A shorter run: its last 10k frames; the published runs cut there.
  short = make_logdir(tmp_path / 'short', 'atari100k_pong', 0, [4, 6, 8],
                      steps=[86000, 88000, 90000],
                      config_extra='env: {atari: {repeat: 4}}\n')
  code, out, _ = run_main([short, '--baseline', path, '--json'], capsys)
  rows = {r['published']: r for r in json.loads(out)['rows']}
  assert rows[False]['final'] == pytest.approx(
      slow_window([344000, 352000, 360000], [4, 6, 8], 350000, 360000))
  # Published, cut at 360k: the episode in (350k, 360k] ends at 355k.
  assert rows[True]['final'] == pytest.approx(9.0)
  # No episode in the window: the last one before it.
  assert scores.window_score([10, 20], [1.0, 2.0], 50, 60) == 2.0


# Logdirs end to end.

def test_table_from_seed_directories(tmp_path, capsys):
  root = tmp_path / 'exp'
  # Atari100k final scores: the episodes of the last 10k frames reached
  # (frames = step x 4). seed0 mean(-6.1, 0) = -3.05 -> HNS 0.5; seed1
  # mean(10, 10) = 10 -> HNS 30.7 / 35.3.
  make_logdir(root / 'dreamer' / 'seed0', 'atari100k_pong', 0,
              [-21, -6.1, 0], steps=[100, 2600, 2700],
              config_extra='env: {atari: {repeat: 4}}\n')
  make_logdir(root / 'dreamer' / 'seed1', 'atari100k_pong', 1,
              [-20, 10, 10], steps=[100, 2600, 2800],
              config_extra='env: {atari: {repeat: 4}}\n')
  # Breakout (no repeat configured: 1) final mean(1.7, 30.5) = 16.1 -> HNS
  # 0.5.
  make_logdir(root / 'dreamer' / 'seed2', 'atari100k_breakout', 2,
              [0, 1.7, 30.5], steps=[100, 10250, 10300])
  make_logdir(root / 'solo_run', 'minatar_breakout', 0, [1, 2, 3])
  code, out, _ = run_main([root, '--last', '2', '--json'], capsys)
  assert code == 0
  result = json.loads(out)
  rows = {(r['task'], r['method']): r for r in result['rows']}
  assert set(rows) == {('atari100k_pong', 'dreamer'),
                       ('atari100k_breakout', 'dreamer'),
                       ('minatar_breakout', 'solo_run')}
  pong = rows['atari100k_pong', 'dreamer']
  assert pong['runs'] == 2 and sorted(pong['seeds']) == [0, 1]
  assert sorted(pong['finals']) == pytest.approx([-3.05, 10.0])
  assert pong['final'] == pytest.approx(3.475)
  hns_pong = (0.5 + 30.7 / 35.3) / 2
  assert pong['human_normalized'] == pytest.approx(hns_pong)
  # Env steps: last logged step x action repeat 4.
  assert (pong['steps_min'], pong['steps_max']) == (10800, 11200)
  breakout = rows['atari100k_breakout', 'dreamer']
  assert breakout['steps_max'] == 10300  # No repeat configured: 1.
  assert breakout['human_normalized'] == pytest.approx(0.5)
  assert rows['minatar_breakout', 'solo_run']['human_normalized'] is None
  [agg] = result['aggregates']
  assert (agg['method'], agg['suite'], agg['games'], agg['runs']) == (
      'dreamer', 'atari100k', 2, 3)
  assert agg['mean'] == pytest.approx((hns_pong + 0.5) / 2)
  assert agg['median'] == pytest.approx((hns_pong + 0.5) / 2)
  assert agg['iqm'] == pytest.approx((0.5 + 30.7 / 35.3 + 0.5) / 3)


def test_method_labels(tmp_path, capsys):
  assert scores.method_label(tmp_path / 'uncertainty' / 'seed12') == (
      'uncertainty')
  assert scores.method_label(tmp_path / 'runs' / 'pong_seed0') == 'pong_seed0'
  a = make_logdir(tmp_path / 'a' / 'seed0', 'dummy_disc', 0, [1.0])
  b = make_logdir(tmp_path / 'b', 'dummy_disc', 1, [3.0])
  code, out, _ = run_main([a, b, '--json'], capsys)
  assert sorted(r['method'] for r in json.loads(out)['rows']) == ['a', 'b']
  code, out, _ = run_main([a, b, '--method', 'mine', '--json'], capsys)
  [row] = json.loads(out)['rows']
  assert row['method'] == 'mine' and row['final'] == pytest.approx(2.0)


def test_baseline_file_matches_atari100k_and_is_cut(tmp_path, capsys):
  path = tmp_path / 'tiny-dreamerv3.json.gz'
  records = [
      {'task': 'atari_pong', 'method': 'dreamerv3', 'seed': 0,
       'xs': [0, 100, 200, 300, 900], 'ys': [None, -20, -10, 0, 20]},
      {'task': 'atari_pong', 'method': 'dreamerv3', 'seed': 1,
       'xs': [100, 200, 300], 'ys': [-18, -14, -2]},
      {'task': 'atari_boxing', 'method': 'dreamerv3', 'seed': 0,
       'xs': [100], 'ys': [50]},
  ]
  with gzip.open(path, 'wt') as f:
    json.dump(records, f)
  runs = scores.load_baseline(path)
  assert [r.task for r in runs] == ['atari_pong', 'atari_pong', 'atari_boxing']
  assert runs[0].xs.tolist() == [100, 200, 300, 900]  # None dropped.
  assert runs[0].method == 'tiny-dreamerv3 [published]'
  # Ours reached 300 env steps: published points past 300 are cut.
  logdir = make_logdir(tmp_path / 'ours', 'atari100k_pong', 0, [-21, -19, -17])
  code, out, _ = run_main([logdir, '--baseline', path, '--last', '2',
                           '--json'], capsys)
  assert code == 0
  rows = {r['method']: r for r in json.loads(out)['rows']}
  assert set(rows) == {'ours', 'tiny-dreamerv3 [published]'}
  published = rows['tiny-dreamerv3 [published]']
  assert published['task'] == 'atari100k_pong' and published['runs'] == 2
  # Atari100k scores the episodes of the last 10k frames reached, here all
  # up to 300: mean(-20, -10, 0) and mean(-18, -14, -2).
  assert sorted(published['finals']) == pytest.approx([-34 / 3, -10.0])
  assert rows['ours']['final'] == pytest.approx(-19.0)
  # A run that ends before the first published point is told so; another
  # task is told that none matches.
  early = make_logdir(tmp_path / 'early', 'atari100k_pong', 0, [-21],
                      steps=[50])
  code, _, err = run_main([early, '--baseline', path], capsys)
  assert code == 0
  assert ('the published curves of [\'atari100k_pong\'] begin at 100 env '
          'steps; the runs reached 50') in err, err
  other = make_logdir(tmp_path / 'other', 'atari100k_alien', 0, [100])
  code, _, err = run_main([other, '--baseline', path], capsys)
  assert code == 0
  assert "no published curve matches the tasks ['atari100k_alien']" in err


def test_plot_writes_png(tmp_path, capsys):
  for seed in range(2):
    make_logdir(tmp_path / 'm' / f'seed{seed}', 'atari100k_pong', seed,
                [-21 + i + seed for i in range(30)])
  make_logdir(tmp_path / 'solo', 'minatar_breakout', 0, [1, 2, 3])
  out_png = tmp_path / 'curves.png'
  code, out, _ = run_main([tmp_path, '--plot', out_png, '--smooth', '5'],
                          capsys)
  assert code == 0
  data = out_png.read_bytes()
  assert len(data) > 1000 and data[:8] == b'\x89PNG\r\n\x1a\n'


def test_script_subprocess(tmp_path):
  logdir = make_logdir(tmp_path / 'run', 'atari_pong', 3, [-21, -20, 14.6])
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), str(logdir), '--last', '1'],
      capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  line = next(l for l in proc.stdout.splitlines() if l.startswith('atari_pong'))
  # Final 14.6 is exactly human level.
  assert line.split()[1:] == ['run', '1', '300', '14.60', '1.000']
  assert 'mean of the last 1 episode/score' in proc.stdout


# Bad input.

def error_of(argv, capsys):
  code, _, err = run_main(argv, capsys)
  assert code == 2
  assert err.count('\n') == 1  # One line.
  return err


def test_errors(tmp_path, capsys):
  err = error_of([tmp_path / 'missing'], capsys)
  assert 'missing: no such file or directory' in err
  (tmp_path / 'empty_parent').mkdir()
  assert 'no scores.jsonl in it or below it' in error_of(
      [tmp_path / 'empty_parent'], capsys)

  logdir = make_logdir(tmp_path / 'run', 'dummy_disc', 0, [1.0, 2.0])
  (logdir / 'scores.jsonl').write_text('')
  err = error_of([logdir], capsys)
  assert f'{logdir / "scores.jsonl"}: empty file' in err

  (logdir / 'scores.jsonl').write_text(
      '{"step": 1, "episode/score": 1.0}\n{"step": 2, "episode/sc\n')
  err = error_of([logdir], capsys)
  assert f'{logdir / "scores.jsonl"}:2: malformed JSON' in err

  (logdir / 'scores.jsonl').write_text('{"episode/score": 1.0}\n')
  assert 'scores.jsonl:1: missing or non-numeric "step"' in error_of(
      [logdir], capsys)

  (logdir / 'scores.jsonl').write_text('{"step": 1, "episode/score": 1}\n')
  (logdir / 'config.yaml').unlink()
  assert 'config.yaml: missing' in error_of([logdir], capsys)

  bad = tmp_path / 'bad.json.gz'
  bad.write_bytes(b'not gzip')
  assert f'{bad}: not a gzip\'d JSON file' in error_of(
      ['--baseline', bad], capsys)


def test_logdir_without_episodes_is_skipped(tmp_path, capsys):
  early = make_logdir(tmp_path / 'early', 'dummy_disc', 0, [])
  (early / 'scores.jsonl').write_text('{"step": 5, "eval_episode/score": 2}\n')
  done = make_logdir(tmp_path / 'done', 'dummy_disc', 0, [4.0])
  code, out, err = run_main([early, done, '--json'], capsys)
  assert code == 0 and "no 'episode/score' values yet" in err
  assert [r['method'] for r in json.loads(out)['rows']] == ['done']
  code, out, _ = run_main([early, '--metric', 'eval_episode/score', '--json'],
                          capsys)
  assert json.loads(out)['rows'][0]['final'] == pytest.approx(2.0)


def test_until_compares_runs_at_one_budget(tmp_path, capsys):
  # Env steps = logged step x repeat 4; --until 1000 keeps steps <= 250.
  make_logdir(tmp_path / 'a' / 'seed0', 'atari_pong', 0,
              [1, 2, 3, 40], steps=[100, 200, 250, 400],
              config_extra='env: {atari: {repeat: 4}}\n')
  make_logdir(tmp_path / 'b' / 'seed0', 'atari_pong', 0, [5, 6],
              steps=[300, 500], config_extra='env: {atari: {repeat: 4}}\n')
  code, out, err = run_main(
      [tmp_path, '--last', '2', '--until', '1000', '--json'], capsys)
  assert code == 0
  [row] = json.loads(out)['rows']
  assert row['method'] == 'a' and row['final'] == pytest.approx(2.5)
  assert row['steps_max'] == 1000
  assert 'no episodes by step 1000' in err  # Run b starts later.


# Crafter.

def crafter_metrics(logdir, episodes, prefix='episode'):
  """A metrics.jsonl with one line per episode (the achievements it
  unlocked) between lines of other metrics."""
  from embodied.envs.crafter import ACHIEVEMENTS
  logdir.mkdir(parents=True)
  rows = []
  for unlocked in episodes:
    rows.append({'step': 1, 'train/loss': 1.0})
    rows.append({'step': 2, **{f'{prefix}/achievement_{n}_mean':
                               float(n in unlocked) for n in ACHIEVEMENTS}})
  (logdir / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))


def test_crafter_scores_pooled_per_run(tmp_path, capsys):
  import math
  crafter_metrics(tmp_path / 'a' / 'seed0', [['wake_up'], []])
  crafter_metrics(tmp_path / 'a' / 'seed1', [['wake_up', 'eat_cow']] * 4)
  crafter_metrics(tmp_path / 'b', [['wake_up']], prefix='eval_episode')
  code, out, _ = run_main([tmp_path / 'a', '--achievements'], capsys)
  assert code == 0
  score = lambda *rates: math.exp(sum(map(math.log1p, rates)) / 22) - 1
  first, second = score(50), score(100, 100)
  lines = out.splitlines()
  assert lines[0] == f'{tmp_path}/a/seed0: score {first:.2f}% over 2 episodes'
  assert '  wake_up               50.00%' in lines
  assert '  eat_cow              100.00%' in lines
  assert len(lines) == 2 * (1 + 22) + 1
  mean, std = (first + second) / 2, abs(first - second) / 2
  assert lines[-1] == f'mean {mean:.2f}% std {std:.2f}% over 2 runs'
  # Eval episodes: the prefix of --metric; training ones are not counted.
  code, out, _ = run_main([tmp_path / 'b', '--crafter', '--metric',
                           'eval_episode/score'], capsys)
  assert out == f'{tmp_path}/b: score {score(100):.2f}% over 1 episodes\n'
  code, out, err = run_main([tmp_path / 'b', '--crafter'], capsys)
  assert code == 0 and out == ''
  assert err == (f'warning: {tmp_path}/b: no Crafter episodes under '
                 'episode/; skipped\n')
  code, out, _ = run_main([tmp_path / 'a', '--crafter', '--json'], capsys)
  result = json.loads(out)
  assert [r['episodes'] for r in result['runs']] == [2, 4]
  assert result['mean'] == pytest.approx(mean)
  assert result['std'] == pytest.approx(std)
  (tmp_path / 'b' / 'metrics.jsonl').write_text(
      '{"step": 1, "episode/achievement_collect_coal_mean": 1}\n')
  code, _, err = run_main([tmp_path / 'b', '--crafter'], capsys)
  assert code == 2 and 'metrics.jsonl:1: lacks episode/achievement_' in err
