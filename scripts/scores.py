"""Final scores, Atari human-normalised scores and learning curves of our
runs, next to published baselines.

  python scripts/scores.py ~/logdir/pong_seed0 ~/logdir/pong_seed1
  python scripts/scores.py ~/exp                 # every logdir below ~/exp
  python scripts/scores.py ~/exp --plot curves.png \\
      --baseline ../shared/baselines/atari100k-dreamerv3.json.gz
  python scripts/scores.py --baseline FILE.json.gz   # published numbers only
  python scripts/scores.py ~/logdir/crafter --achievements   # Crafter score

A logdir is a directory with a `scores.jsonl` (one JSON object per line with
`step` and e.g. `episode/score`) and a `config.yaml` (for `task` and `seed`).

Definitions (also printed with the table):
- Method: the logdir's directory name, or its parent's name when the logdir
  is called `seed<k>` (ROOT/<method>/seed<k>, or ROOT/<task>/<method>/seed<k>
  as scripts/study.py writes with several --tasks); `--method` overrides.
  The task always comes from config.yaml. An `experiment.json` in a given
  directory (scripts/study.py --name) is printed above the table.
- Env steps: the logged `step` (one per agent step) times the action repeat
  read from config.yaml at `env.<suite>.repeat` (atari100k falls back to
  `env.atari.repeat`), 1 when absent; `--repeat` overrides. Published curves
  count env steps the same way (Atari: frames).
- Final score of a run: the mean of its last N values of the metric
  (`--last N`, default 10; `--metric`, default episode/score). A task's row
  shows the mean and standard deviation over runs (seeds). Two suites follow
  the protocol of their published curves instead:
- DeepMind Control (dmc_* tasks): a run's points are the mean episode score
  per 10k env-step bin, as the published dmc_*-dreamerv3 curves: the bin
  with right edge x holds the episodes that end in (x - 10k, x], and only
  bins the run has passed count (x <= env steps reached); a bin without an
  episode end has no point. Curves and final scores (mean of the last N
  bins) use these points for ours and the published runs alike.
- Atari100k (atari100k_* tasks and the atari100k files' runs): the final
  score is the mean of the episodes that end in (390k, 400k] frames, the
  last 10k of the 400k budget (danijar/dreamerv3 issue #177), for ours and
  each published run alike; a run that stopped earlier is scored on the
  last 10k frames it reached, (steps - 10k, steps], and the published runs
  are cut at the same point. A run without an episode end in its window
  scores its last episode before the window's end.
- Human-normalised score (atari_* and atari100k_* tasks):
  (score - random) / (human - random), with the random and human reference
  scores of the 57-game table used by the DQN, Rainbow, Agent57 and DreamerV3
  papers (ATARI_SCORES below).
- Aggregates over games and seeds, per method and suite, as in Agarwal et al.
  2021 (rliable): mean and median over games of each game's mean over runs,
  and the interquartile mean (IQM) over all (game, run) scores pooled: sort
  the n scores, drop floor(n / 4) from each end and average the rest. That is
  scipy.stats.trim_mean(x, 0.25); for n not divisible by 4 it keeps slightly
  more than the middle half (n=5 keeps 3, n=6 keeps 4), for n < 4 all.
- Published curves: matched by task, where our `atari100k_<game>` also
  matches a published `atari_<game>` (the Atari100k files name their tasks
  `atari_<game>`). With runs of ours, a published curve is cut at the most
  env steps our runs of that task reached, so its final score (mean of its
  last N points, which are episodes or per-interval averages as published)
  compares like for like.
- Crafter score (--crafter; --achievements also prints each achievement's
  success rate): read from each logdir's metrics.jsonl, where every finished
  Crafter episode left <prefix>/achievement_<name>_mean = 0 or 1
  (embodied/envs/crafter.py), with the prefix of --metric (episode, or
  eval_episode). An achievement's success rate is the percent of all the
  run's episodes that unlocked it; the score is exp(mean_i ln(1 + s_i)) - 1
  over the 22 achievements (Hafner 2021). The in-run figure
  episode/crafter_score_mean is the same formula over one env worker's
  episodes so far; this pools all workers. With several runs, also the
  mean and standard deviation of their scores.
"""

import argparse
import collections
import dataclasses
import gzip
import json
import math
import pathlib
import re
import sys

import numpy as np

# Random and human reference scores (random, human) per game: the standard
# 57-game table (Mnih et al. 2015 and Wang et al. 2016 human scores, as used
# by Rainbow, Agent57 and DreamerV3). Names are our snake_case task names.
ATARI_SCORES = {
    'alien': (227.8, 7127.7),
    'amidar': (5.8, 1719.5),
    'assault': (222.4, 742.0),
    'asterix': (210.0, 8503.3),
    'asteroids': (719.1, 47388.7),
    'atlantis': (12850.0, 29028.1),
    'bank_heist': (14.2, 753.1),
    'battle_zone': (2360.0, 37187.5),
    'beam_rider': (363.9, 16926.5),
    'berzerk': (123.7, 2630.4),
    'bowling': (23.1, 160.7),
    'boxing': (0.1, 12.1),
    'breakout': (1.7, 30.5),
    'centipede': (2090.9, 12017.0),
    'chopper_command': (811.0, 7387.8),
    'crazy_climber': (10780.5, 35829.4),
    'defender': (2874.5, 18688.9),
    'demon_attack': (152.1, 1971.0),
    'double_dunk': (-18.6, -16.4),
    'enduro': (0.0, 860.5),
    'fishing_derby': (-91.7, -38.7),
    'freeway': (0.0, 29.6),
    'frostbite': (65.2, 4334.7),
    'gopher': (257.6, 2412.5),
    'gravitar': (173.0, 3351.4),
    'hero': (1027.0, 30826.4),
    'ice_hockey': (-11.2, 0.9),
    'jamesbond': (29.0, 302.8),
    'kangaroo': (52.0, 3035.0),
    'krull': (1598.0, 2665.5),
    'kung_fu_master': (258.5, 22736.3),
    'montezuma_revenge': (0.0, 4753.3),
    'ms_pacman': (307.3, 6951.6),
    'name_this_game': (2292.3, 8049.0),
    'phoenix': (761.4, 7242.6),
    'pitfall': (-229.4, 6463.7),
    'pong': (-20.7, 14.6),
    'private_eye': (24.9, 69571.3),
    'qbert': (163.9, 13455.0),
    'riverraid': (1338.5, 17118.0),
    'road_runner': (11.5, 7845.0),
    'robotank': (2.2, 11.9),
    'seaquest': (68.4, 42054.7),
    'skiing': (-17098.1, -4336.9),
    'solaris': (1236.3, 12326.7),
    'space_invaders': (148.0, 1668.7),
    'star_gunner': (664.0, 10250.0),
    'surround': (-10.0, 6.5),
    'tennis': (-23.8, -8.3),
    'time_pilot': (3568.0, 5229.2),
    'tutankham': (11.4, 167.6),
    'up_n_down': (533.4, 11693.2),
    'venture': (0.0, 1187.5),
    'video_pinball': (0.0, 17667.9),
    'wizard_of_wor': (563.5, 4756.5),
    'yars_revenge': (3092.9, 54576.9),
    'zaxxon': (32.5, 9173.3),
}
ATARI_SUITES = ('atari', 'atari100k')
# Env steps per bin of the published DMC curves (their xs are bin edges).
DMC_BIN = 10000
# Atari100k: the score window's end and width in frames (the budget).
ATARI100K_END, ATARI100K_WINDOW = 400000, 10000


class ScoresError(Exception):
  """Bad input; the message is one line naming the file and value at fault."""


@dataclasses.dataclass
class Run:
  """One learning curve: ours (from a logdir) or a published seed."""
  task: str
  method: str
  seed: object
  xs: np.ndarray        # env steps at which each episode ended (DMC: bins)
  ys: np.ndarray        # episode scores (DMC: mean score per bin)
  steps: float          # env steps reached
  source: str           # logdir or baseline file
  published: bool = False


# Reading our logdirs.

def find_logdirs(paths, name='scores.jsonl'):
  """Each path is a logdir (a directory with the file `name`) or a
  directory searched for logdirs below it."""
  found = []
  for path in map(pathlib.Path, paths):
    if not path.exists():
      raise ScoresError(f'{path}: no such file or directory')
    if path.is_file():
      if path.name == name:
        found.append(path.parent)
        continue
      raise ScoresError(f'{path}: expected a logdir (a directory with '
                        f'{name}), got a file')
    if (path / name).is_file():
      found.append(path)
      continue
    below = sorted(p.parent for p in path.rglob(name) if p.is_file())
    if not below:
      raise ScoresError(f'{path}: no {name} in it or below it')
    found += below
  unique = []  # A logdir given twice (or inside a given parent) counts once.
  for path in found:
    if path.resolve() not in [p.resolve() for p in unique]:
      unique.append(path)
  return unique


def read_experiments(paths):
  """[(path, name, description)] of the experiment.json files in the given
  directories."""
  found = []
  for path in map(pathlib.Path, paths):
    file = path / 'experiment.json'
    if path.is_dir() and file.is_file():
      try:
        info = json.loads(file.read_text())
      except ValueError:
        continue
      found.append((str(path), info.get('name', ''),
                    info.get('description', '')))
  return found


def method_label(logdir):
  """ROOT/<method>/seed<k> -> <method>; any other logdir -> its own name."""
  path = pathlib.Path(logdir).resolve()
  if re.fullmatch(r'seed\d+', path.name):
    return path.parent.name
  return path.name


def read_jsonl(path):
  """The lines of a scores.jsonl as dicts, each with a numeric 'step'."""
  path = pathlib.Path(path)
  text = path.read_text()
  if not text.strip():
    raise ScoresError(f'{path}: empty file (no episodes logged yet)')
  lines = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
    except json.JSONDecodeError as e:
      raise ScoresError(
          f'{path}:{number}: malformed JSON ({e.msg}): {line[:80]!r}') from None
    if not isinstance(entry, dict):
      raise ScoresError(
          f'{path}:{number}: expected a JSON object, got {line[:80]!r}')
    step = entry.get('step')
    if not _is_number(step):
      raise ScoresError(f'{path}:{number}: missing or non-numeric "step": '
                        f'{line[:80]!r}')
    for key, value in entry.items():
      if key != 'step' and not (_is_number(value) or value is None):
        raise ScoresError(
            f'{path}:{number}: non-numeric value for {key!r}: {value!r}')
    lines.append(entry)
  return lines


def read_config(logdir):
  """config.yaml of a logdir as a nested dict."""
  from ruamel.yaml import YAML
  from ruamel.yaml.error import YAMLError
  path = pathlib.Path(logdir) / 'config.yaml'
  if not path.is_file():
    raise ScoresError(f'{path}: missing (needed for the task name and seed)')
  try:
    config = YAML(typ='safe').load(path.read_text())
  except YAMLError as e:
    mark = getattr(e, 'problem_mark', None)
    where = f':{mark.line + 1}' if mark else ''
    raise ScoresError(f'{path}{where}: invalid YAML '
                      f'({getattr(e, "problem", None) or e})') from None
  if not isinstance(config, dict):
    raise ScoresError(f'{path}: expected a mapping, got {type(config).__name__}')
  if not isinstance(config.get('task'), str) or not config['task']:
    raise ScoresError(f'{path}: no "task" string in it')
  return config


def action_repeat(config, task):
  """Env steps per agent step: env.<suite>.repeat, 1 when not configured."""
  suite = task.split('_', 1)[0]
  env = config.get('env') or {}
  names = [suite] + (['atari'] if suite == 'atari100k' else [])
  for name in names:
    block = env.get(name)
    if isinstance(block, dict):
      for key in ('repeat', 'action_repeat'):
        if _is_number(block.get(key)):
          return block[key]
  return 1


def load_run(logdir, metric='episode/score', method=None, repeat=None,
             until=None):
  """A Run from a logdir, or None (with a warning) if it has no episodes of
  the metric yet. until: only episodes logged at or before this many env
  steps (to compare runs at one budget)."""
  logdir = pathlib.Path(logdir)
  config = read_config(logdir)
  task = config['task']
  lines = read_jsonl(logdir / 'scores.jsonl')
  repeat = action_repeat(config, task) if repeat is None else repeat
  if until is not None:
    lines = [e for e in lines if e['step'] * repeat <= until]
  points = [(e['step'], e[metric]) for e in lines
            if _is_number(e.get(metric))]
  if not points:
    if until is not None and not lines:
      print(f'warning: {logdir}: no episodes by step {until:g}; skipped',
            file=sys.stderr)
      return None
    keys = sorted({k for e in lines for k in e} - {'step'})
    print(f'warning: {logdir / "scores.jsonl"}: no {metric!r} values yet '
          f'(keys present: {", ".join(keys) or "none"}); skipped',
          file=sys.stderr)
    return None
  xs, ys = np.array(points, np.float64).T
  steps = max([e['step'] for e in lines] + [last_step(logdir)]) * repeat
  if until is not None:
    steps = min(steps, until)
  xs = xs * repeat
  if is_dmc(task):
    xs, ys = bin_scores(xs, ys, DMC_BIN, steps)
    keep = ~np.isnan(ys)
    xs, ys = xs[keep], ys[keep]
  return Run(task=task, method=method or method_label(logdir),
             seed=config.get('seed'), xs=xs, ys=ys, steps=steps,
             source=str(logdir))


def last_step(logdir):
  """The step of the last complete line of LOGDIR/metrics.jsonl (0 when
  absent): how far a run got, which its episodes' ends may not show."""
  path = pathlib.Path(logdir) / 'metrics.jsonl'
  if not path.is_file():
    return 0
  with path.open('rb') as f:
    f.seek(0, 2)
    f.seek(max(0, f.tell() - 65536))
    lines = f.read().split(b'\n')[:-1]  # The last may be unterminated.
  for line in reversed(lines):
    try:
      step = json.loads(line).get('step')
    except (ValueError, AttributeError):
      continue
    if _is_number(step):
      return step
  return 0


def is_dmc(task):
  return task.startswith('dmc_')


def bin_scores(xs, ys, width=DMC_BIN, reached=None):
  """Mean score per bin of `width` env steps, as the published DMC curves:
  (edges, means) with edges width, 2 width, ... up to `reached` (default:
  the last episode's end), and the mean of the episodes that end in
  (edge - width, edge]; NaN for a bin without an episode end."""
  xs = np.asarray(xs, np.float64)
  ys = np.asarray(ys, np.float64)
  if reached is None:
    reached = xs.max() if len(xs) else 0
  count = int(reached // width)
  edges = width * np.arange(1, count + 1, dtype=np.float64)
  index = np.ceil(xs / width).astype(np.int64) - 1  # (k w, (k + 1) w] -> k.
  inside = (index >= 0) & (index < count)
  sums = np.bincount(index[inside], ys[inside], minlength=count)
  counts = np.bincount(index[inside], minlength=count)
  with np.errstate(invalid='ignore', divide='ignore'):
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
  return edges, means


# Published baselines.

def canonical(task):
  """Task name for matching published curves: the Atari100k files name
  their tasks atari_<game>."""
  if task.startswith('atari100k_'):
    return 'atari_' + task[len('atari100k_'):]
  return task


def load_baseline(path):
  """Runs from a published file: gzip'd JSON list of {task, method, seed,
  xs, ys}; null scores (no episode in that interval) are dropped."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ScoresError(f'{path}: no such baseline file')
  try:
    with gzip.open(path, 'rt') as f:
      records = json.load(f)
  except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ScoresError(f'{path}: not a gzip\'d JSON file ({e})') from None
  if not isinstance(records, list):
    raise ScoresError(f'{path}: expected a JSON list of runs, got '
                      f'{type(records).__name__}')
  label = path.name.removesuffix('.gz').removesuffix('.json')
  runs = []
  for index, rec in enumerate(records):
    where = f'{path}: run {index}'
    if not isinstance(rec, dict) or not {'task', 'xs', 'ys'} <= rec.keys():
      raise ScoresError(f'{where}: expected keys task, method, seed, xs, ys')
    xs, ys = rec['xs'], rec['ys']
    if not (isinstance(xs, list) and isinstance(ys, list)
            and len(xs) == len(ys)):
      raise ScoresError(f'{where} ({rec["task"]}): xs and ys must be lists '
                        'of equal length')
    keep = [(x, y) for x, y in zip(xs, ys) if _is_number(x) and _is_number(y)]
    if not keep:
      continue
    x, y = np.array(keep, np.float64).T
    method = str(rec.get('method', label))
    name = label if label.endswith(method) else f'{method} ({label})'
    runs.append(Run(task=str(rec['task']), method=name + ' [published]',
                    seed=rec.get('seed'), xs=x, ys=y, steps=float(x.max()),
                    source=str(path), published=True))
  return runs


def match_baselines(ours, published):
  """Published runs renamed to our task names and cut at the env steps our
  runs of that task reached. Without runs of ours: all, uncut."""
  if not ours:
    return list(published)
  reached = collections.defaultdict(float)
  for run in ours:
    reached[run.task] = max(reached[run.task], run.steps)
  matched = []
  for task, limit in reached.items():
    for run in published:
      if canonical(run.task) != canonical(task):
        continue
      keep = run.xs <= limit
      if not keep.any():
        continue
      # Cut where ours stopped: a longer published run went past it.
      matched.append(dataclasses.replace(
          run, task=task, xs=run.xs[keep], ys=run.ys[keep],
          steps=float(min(limit, run.steps))))
  return matched


def unmatched(ours, published):
  """Why no published curve was matched: another task, or curves that
  begin after the env steps our runs reached."""
  tasks = sorted({r.task for r in ours})
  same = [r for r in published
          if canonical(r.task) in {canonical(t) for t in tasks}]
  if not same:
    return f'no published curve matches the tasks {tasks}'
  reached = max(r.steps for r in ours)
  first = min(float(r.xs.min()) for r in same)
  return (f'the published curves of {tasks} begin at {first:,.0f} env '
          f'steps; the runs reached {reached:,.0f}')


# Statistics.

def final_score(ys, last=10):
  """Mean of the last `last` scores."""
  ys = np.asarray(ys, np.float64)
  if not len(ys):
    return float('nan')
  return float(ys[-last:].mean())


def is_atari100k(run):
  """Ours on atari100k_* tasks, or a run of a published atari100k file."""
  return run.task.startswith('atari100k_') or (
      run.published and pathlib.Path(run.source).name.startswith('atari100k'))


def atari100k_window(steps):
  """(lo, hi]: the frames whose episode ends make the Atari100k score."""
  hi = ATARI100K_END if steps > ATARI100K_END - ATARI100K_WINDOW else steps
  return hi - ATARI100K_WINDOW, hi


def window_score(xs, ys, lo, hi):
  """Mean score of the episodes that end in (lo, hi]; without one, the
  last episode that ended before hi."""
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  inside = (xs > lo) & (xs <= hi)
  if inside.any():
    return float(ys[inside].mean())
  before = np.flatnonzero(xs <= hi)
  return float(ys[before[-1]]) if len(before) else float('nan')


def run_score(run, last=10):
  """A run's final score under its suite's protocol (module docstring)."""
  if is_atari100k(run):
    return window_score(run.xs, run.ys, *atari100k_window(run.steps))
  return final_score(run.ys, last)


def human_normalized(task, score):
  """(score - random) / (human - random) for Atari tasks, else None."""
  suite, _, game = task.partition('_')
  if suite not in ATARI_SUITES or game not in ATARI_SCORES:
    return None
  random, human = ATARI_SCORES[game]
  return (score - random) / (human - random)


def iqm(values):
  """Interquartile mean: drop floor(n/4) values from each end of the sorted
  values, average the rest (scipy.stats.trim_mean(values, 0.25))."""
  values = np.sort(np.asarray(values, np.float64).ravel())
  if not len(values):
    return float('nan')
  cut = len(values) // 4
  return float(values[cut:len(values) - cut].mean())


def aggregate(per_game):
  """Mean and median over games of the per-game mean over runs; IQM over all
  (game, run) scores pooled. per_game: {game: [score of each run]}."""
  game_means = [float(np.mean(v)) for v in per_game.values()]
  pooled = [x for v in per_game.values() for x in v]
  return {
      'games': len(per_game), 'runs': len(pooled),
      'mean': float(np.mean(game_means)),
      'median': float(np.median(game_means)),
      'iqm': iqm(pooled),
  }


def summarize(runs, last=10):
  """Rows per (task, method) and Atari aggregates per (method, suite)."""
  groups = collections.defaultdict(list)
  for run in runs:
    groups[(run.task, run.method)].append(run)
  rows, normed = [], collections.defaultdict(lambda: collections.defaultdict(list))
  order = lambda item: (item[0][0], item[1][0].published, item[0][1])
  for (task, method), group in sorted(groups.items(), key=order):
    finals = [run_score(r, last) for r in group]
    hns = [human_normalized(task, f) for f in finals]
    row = {
        'task': task, 'method': method, 'runs': len(group),
        'seeds': [r.seed for r in group],
        'published': group[0].published,
        'steps_min': min(r.steps for r in group),
        'steps_max': max(r.steps for r in group),
        'final': float(np.mean(finals)),
        'final_std': float(np.std(finals)),
        'finals': finals,
        'human_normalized': None if hns[0] is None else float(np.mean(hns)),
        'sources': [r.source for r in group],
    }
    rows.append(row)
    if hns[0] is not None:
      suite, _, game = task.partition('_')
      normed[(method, suite)][game] += hns
  aggregates = [{'method': m, 'suite': s, **aggregate(g)}
                for (m, s), g in sorted(normed.items())]
  return rows, aggregates


# Output.

def definitions(args):
  return [
      f'Final score: mean of the last {args.last} {args.metric} values of each '
      'run; mean ± std over runs. DMC: points are mean scores per 10k '
      'env-step bin (episodes ending in (x - 10k, x]), the final the mean of '
      f'the last {args.last} bins. Atari100k: mean of the episodes ending in '
      '(390k, 400k] frames (or the last 10k frames reached).',
      'Env steps: logged step x action repeat ' + (
          f'{args.repeat:g} (--repeat).' if args.repeat else
          '(config env.<suite>.repeat, else 1).'),
      'HNS: Atari human-normalised (score - random) / (human - random).',
  ]


def format_table(rows, aggregates, args):
  out = [*definitions(args), '']
  header = ['task', 'method', 'runs', 'env steps', 'final score', 'HNS']
  table = [header]
  for r in rows:
    steps = _count(r['steps_max'])
    if r['steps_min'] != r['steps_max']:
      steps = f'{_count(r["steps_min"])}-{steps}'
    final = _num(r['final'])
    if r['runs'] > 1:
      final += f' ± {_num(r["final_std"])}'
    hns = r['human_normalized']
    table.append([r['task'], r['method'], str(r['runs']), steps, final,
                  '-' if hns is None else f'{hns:.3f}'])
  out += _columns(table, right=(2, 3, 4, 5))
  if aggregates:
    out += ['', 'Atari human-normalised over games and seeds: mean and median '
            'of per-game means; IQM of all runs pooled (drop floor(n/4) at '
            'each end).']
    table = [['method', 'suite', 'games', 'runs', 'mean', 'median', 'IQM']]
    for a in aggregates:
      table.append([a['method'], a['suite'], str(a['games']), str(a['runs']),
                    f'{a["mean"]:.3f}', f'{a["median"]:.3f}',
                    f'{a["iqm"]:.3f}'])
    out += _columns(table, right=(2, 3, 4, 5, 6))
  return '\n'.join(out)


def _columns(table, right=()):
  widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
  lines = []
  for row in table:
    cells = [c.rjust(w) if i in right else c.ljust(w)
             for i, (c, w) in enumerate(zip(row, widths))]
    lines.append('  '.join(cells).rstrip())
  return lines


def _count(x):
  return f'{int(round(x)):,}'


def _num(x):
  if x != x:
    return 'nan'
  return f'{x:,.1f}' if abs(x) >= 100 else f'{x:.2f}'


def _is_number(x):
  return (isinstance(x, (int, float)) and not isinstance(x, bool)
          and math.isfinite(x))


# Plot.

def smooth(ys, window):
  """Trailing running average over `window` points (shorter at the start)."""
  ys = np.asarray(ys, np.float64)
  if window <= 1 or len(ys) < 2:
    return ys
  sums = np.cumsum(np.concatenate([[0.0], ys]))
  idx = np.arange(1, len(ys) + 1)
  lo = np.maximum(idx - window, 0)
  return (sums[idx] - sums[lo]) / (idx - lo)


def mean_curve(runs, window, points=200):
  """Smoothed curves of several seeds on one grid: (x, mean, min, max). The
  grid spans the env steps all seeds cover (their union if none shared)."""
  curves = [(r.xs, smooth(r.ys, window)) for r in runs if len(r.xs)]
  if len(curves) == 1:
    x, y = curves[0]
    return x, y, y, y
  lo = max(x[0] for x, _ in curves)
  hi = min(x[-1] for x, _ in curves)
  if hi <= lo:
    lo, hi = min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves)
  grid = np.linspace(lo, hi, points)
  stack = np.stack([
      np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan)
      for x, y in curves])
  return (grid, np.nanmean(stack, 0), np.nanmin(stack, 0),
          np.nanmax(stack, 0))


def plot(runs, path, window=10):
  """One subplot per task, one line per method (mean over seeds, min-max
  band); published methods dashed."""
  import matplotlib
  matplotlib.use('Agg')  # No display needed.
  import matplotlib.pyplot as plt
  from matplotlib.ticker import EngFormatter
  tasks = sorted({r.task for r in runs})
  cols = min(3, len(tasks))
  rows = math.ceil(len(tasks) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(max(6, 5 * cols), 3.8 * rows),
                           squeeze=False)
  methods = sorted({r.method for r in runs},
                   key=lambda m: (m.endswith('[published]'), m))
  colors = {m: f'C{i % 10}' for i, m in enumerate(methods)}
  for ax, task in zip(axes.flat, tasks):
    for method in methods:
      group = [r for r in runs if r.task == task and r.method == method]
      if not group:
        continue
      x, mean, lo, hi = mean_curve(group, window)
      published = group[0].published
      label = f'{method} ({len(group)})'
      ax.plot(x, mean, color=colors[method], lw=1.6,
              ls='--' if published else '-', label=label)
      if len(group) > 1:
        ax.fill_between(x, lo, hi, color=colors[method],
                        alpha=0.08 if published else 0.2, lw=0)
    ax.set_title(task)
    ax.set_xlabel('env steps')
    ax.set_ylabel('episode score')
    ax.xaxis.set_major_formatter(EngFormatter(sep=''))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
  for ax in list(axes.flat)[len(tasks):]:
    ax.axis('off')
  fig.suptitle(f'Mean over seeds (count in legend), min-max band, '
               f'running average of {window} episodes', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# Crafter.

def crafter_module():
  """embodied/envs/crafter.py (only this mode needs the repository's
  package)."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
  from embodied.envs import crafter
  return crafter


def crafter_rates(path, prefix='episode'):
  """(episodes, {achievement: percent}) from one metrics.jsonl."""
  names = crafter_module().ACHIEVEMENTS
  keys = {n: f'{prefix}/achievement_{n}_mean' for n in names}
  counts = np.zeros(len(names))
  episodes = 0
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        raise ScoresError(f'{path}:{number}: malformed JSON') from None
      if keys[names[0]] not in row:
        continue  # Not an episode's line.
      missing = [k for k in keys.values() if k not in row]
      if missing:
        raise ScoresError(f'{path}:{number}: lacks {missing[0]}')
      counts += [row[keys[n]] > 0 for n in names]
      episodes += 1
  rates = 100 * counts / max(episodes, 1)
  return episodes, dict(zip(names, rates.tolist()))


def crafter_runs(paths, prefix):
  """[{logdir, episodes, score, rates}] of the runs with Crafter episodes."""
  crafter_score = crafter_module().crafter_score
  runs = []
  for logdir in find_logdirs(paths, 'metrics.jsonl'):
    episodes, rates = crafter_rates(logdir / 'metrics.jsonl', prefix)
    if not episodes:
      print(f'warning: {logdir}: no Crafter episodes under {prefix}/; '
            'skipped', file=sys.stderr)
      continue
    runs.append({'logdir': str(logdir), 'episodes': episodes,
                 'score': crafter_score(list(rates.values())),
                 'rates': rates})
  return runs


def crafter_main(args):
  prefix = args.metric.split('/')[0]
  try:
    runs = crafter_runs(args.logdirs, prefix)
  except ScoresError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  scores = [run['score'] for run in runs]
  if args.json:
    summary = {'mean': float(np.mean(scores)), 'std': float(np.std(scores))} \
        if scores else {}
    print(json.dumps({'prefix': prefix, 'runs': runs, **summary}, indent=1))
    return 0
  for run in runs:
    print(f"{run['logdir']}: score {run['score']:.2f}% over "
          f"{run['episodes']} episodes")
    if args.achievements:
      for name, rate in run['rates'].items():
        print(f'  {name:20s} {rate:6.2f}%')
  if len(scores) > 1:
    print(f'mean {np.mean(scores):.2f}% std {np.std(scores):.2f}% over '
          f'{len(scores)} runs')
  return 0


# Command line.

def parse_args(argv):
  parser = argparse.ArgumentParser(
      description='Final scores, Atari human-normalised aggregates and '
      'learning curves of logdirs, next to published baselines.')
  parser.add_argument('logdirs', nargs='*', help='logdirs, or directories '
                      'searched for logdirs (anything with a scores.jsonl)')
  parser.add_argument('--last', type=int, default=10,
                      help='final score = mean of the last N episodes')
  parser.add_argument('--metric', default='episode/score',
                      help='score key in scores.jsonl (eval_episode/score '
                      'for eval runs)')
  parser.add_argument('--method', help='method label for all given logdirs')
  parser.add_argument('--repeat', type=float, help='action repeat (env steps '
                      'per logged step), instead of reading config.yaml')
  parser.add_argument('--baseline', nargs='+', default=[], metavar='PATH',
                      help='published curves (.json.gz list of {task, '
                      'method, seed, xs, ys})')
  parser.add_argument('--until', type=float, metavar='STEPS',
                      help='only episodes up to this many env steps (compare '
                      'runs of different lengths at one budget)')
  parser.add_argument('--plot', metavar='OUT.png', help='write curves here')
  parser.add_argument('--smooth', type=int, default=10, help='running '
                      'average window of the plotted curves, in points')
  parser.add_argument('--json', action='store_true',
                      help='print machine-readable JSON instead of tables')
  parser.add_argument('--crafter', action='store_true',
                      help='instead: the Crafter score of each logdir, '
                      'pooled over its episodes in metrics.jsonl (prefix '
                      'from --metric)')
  parser.add_argument('--achievements', action='store_true',
                      help='--crafter and each achievement\'s success rate')
  args = parser.parse_args(argv)
  args.crafter = args.crafter or args.achievements
  if args.crafter and not args.logdirs:
    parser.error('--crafter needs logdirs')
  if not args.logdirs and not args.baseline:
    parser.error('give at least one logdir or --baseline file')
  if args.last < 1:
    parser.error(f'--last must be at least 1, got {args.last}')
  if args.smooth < 1:
    parser.error(f'--smooth must be at least 1, got {args.smooth}')
  if args.repeat is not None and args.repeat <= 0:
    parser.error(f'--repeat must be positive, got {args.repeat}')
  if args.plot and not pathlib.Path(args.plot).resolve().parent.is_dir():
    parser.error(f'--plot {args.plot}: its directory does not exist')
  return args


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.crafter:
    return crafter_main(args)
  try:
    ours = []
    for logdir in find_logdirs(args.logdirs) if args.logdirs else []:
      run = load_run(logdir, args.metric, args.method, args.repeat,
                     args.until)
      if run is not None:
        ours.append(run)
    if args.logdirs and not ours:
      raise ScoresError(f'no {args.metric!r} values in any of the logdirs')
    published = [r for p in args.baseline for r in load_baseline(p)]
  except ScoresError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  matched = match_baselines(ours, published)
  if ours and published and not matched:
    print(f'warning: {unmatched(ours, published)}', file=sys.stderr)
  runs = ours + matched
  if not runs:
    print('error: no published curve matches the tasks of the logdirs',
          file=sys.stderr)
    return 2
  rows, aggregates = summarize(runs, args.last)
  if args.plot:
    plot(runs, args.plot, args.smooth)
  experiments = read_experiments(args.logdirs)
  if args.json:
    print(json.dumps({'definitions': definitions(args), 'rows': rows,
                      'aggregates': aggregates, 'plot': args.plot,
                      'experiments': [dict(zip(('root', 'name', 'description'),
                                               e)) for e in experiments]},
                     indent=1))
  else:
    for root, name, description in experiments:
      print(f'Experiment: {name}' + (f' - {description}' if description
                                     else '') + f' ({root})')
    print(format_table(rows, aggregates, args))
    if args.plot:
      print(f'\nPlot: {args.plot}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
