"""The prepared GPU check: a DeepMind Control learning curve from
proprioception, four seeds as one program, set beside the published one,
within a time budget; then, as time allows, one-seed train throughput, and
with --tests the GPU-relevant tests.

Here, with the package registry, before the device call (the carried
packages, the published curve and the commit into .gpu/, which git
ignores; scripts/gpu_carry.py says what travels):
  python scripts/gpu_check.py --prepare
On the GPU machine (the device tool: command `python3 scripts/gpu_check.py
--out $OUT`, carry ['.gpu'], timeout_s 600):
  python3 scripts/gpu_check.py --out OUT [--task walker_walk] [--budget 450]
The CPU dry run with tiny sizes (tests/test_gpu_check.py):
  python scripts/gpu_check.py --cpu --out /tmp/gpu_dry

The learning stage runs first: dreamerv3/main.py --configs dmc_proprio
--task dmc_TASK --run.seeds 4 --run.parallel_envs True (the preset's envs
per seed, size12m, train ratio 512, batch 16 x 64, action repeat 2) until
--env_steps (50k) or the budget (run.duration), leaving time for the
outputs. All stages share one JAX compilation cache in the work folder
(/tmp/dreamer_gpu_check), and the run's logdir stays there: a second call
on the same machine continues the run from its last checkpoint towards
--env_steps (--fresh starts over).

Scores are binned as the published curves (scripts/scores.py bin_scores):
at each 10k env steps x, the mean score of the episodes that end in
(x - 10k, x], env steps being the logged agent step times the action
repeat. Pass criterion: the seeds' mean at 30k, 40k and 50k env steps lies
inside the published seeds' min-max there.

The task: --task, else the first of ORDER without a row in this section of
docs/results.md, whose table's first column is the task without its dmc_
prefix (the rows printed under 'For docs/results.md' are in this format):

  ## DeepMind Control from proprioception (GPU)

  | task | 20k | 30k | 40k | 50k | pass | updates/s | GPU | date | commit |
  | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
  | walker_walk | O [A-B] / P [C-D] | ... | yes | 31.2 | H100 | DATE | SHA |

where each step column holds `ours mean [min-max] / published mean
[min-max]` over the seeds at that many env steps (- where not reached),
pass is yes, no or incomplete, and updates/s is per seed.

Writes to OUT, each rewritten as the run goes (a call killed at its limit
still returns what it has): summary.md (versions, the curve table, the
pass line, env steps/s, updates/s per seed, compile time, peak GPU memory,
the rows for results.md), curve.json (the same numbers), curve.png (ours
per seed and their mean over the published min-max and mean), train.log;
then bench.log and tests.log.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import gpu_carry  # noqa: E402
from scripts import scores  # noqa: E402

PREPARED = ROOT / '.gpu'
BASELINE = 'dmc_proprio-dreamerv3.json.gz'
SECTION = '## DeepMind Control from proprioception (GPU)'
# The tasks in the order the GPU sessions take them.
ORDER = ('walker_walk', 'walker_stand', 'cartpole_balance', 'finger_spin',
         'reacher_easy', 'ball_in_cup_catch')
POINTS = (20000, 30000, 40000, 50000)  # Columns of the results row.
PASS = (30000, 40000, 50000)
TESTS = ['tests/test_bfloat16.py', 'tests/test_numerics.py',
         'tests/test_device_replay.py', 'tests/test_agent.py']

# Stage sizes on the GPU and in the CPU dry run. Seconds: startup, before
# the run's own clock (run.duration) starts; after, kept for the outputs;
# bench, the least left for the one-seed throughput stage.
GPU = dict(
    train=['--configs', 'dmc_proprio'], seeds=4, env_steps=50000,
    bin=scores.DMC_BIN, log_every=30, poll=30, startup=45, after=25,
    min_train=60, bench=['--bench.updates', '20', '--bench.env_steps',
                         '1000', '--bench.flops', 'False'],
    bench_min=120, tests=TESTS, work='/tmp/dreamer_gpu_check', xla_flags='')
CPU = dict(
    # Episodes of 50 steps, few updates: the dry run checks the stage.
    train=['--configs', 'dmc_proprio', 'debug', '--env.length', '50',
           '--run.train_ratio', '8'],
    seeds=2, env_steps=800, bin=200, log_every=2, poll=5, startup=20,
    after=10, min_train=60, bench=None, bench_min=None,
    tests=['tests/test_numerics.py', '-k', 'lambda_return_vs_loop'],
    work=None,
    # Speed does not matter here: LLVM without its optimisations compiles
    # the tiny agent in a third of the time.
    xla_flags='--xla_backend_optimization_level=0 '
              '--xla_llvm_disable_expensive_passes=true')
# Without dm_control (CI installs requirements.txt only), the dry run
# trains on this vector task, still set beside the chosen DMC task's curve.
STAND_IN = 'dummy_vector'


# Preparing (here).

def prepare():
  """The carried packages, the published curve and the commit into .gpu/;
  prints the sizes of what a device call carries."""
  PREPARED.mkdir(exist_ok=True)
  shutil.rmtree(PREPARED / 'wheels', ignore_errors=True)  # Older layout.
  cache = pathlib.Path.home() / '.cache' / 'dreamer' / 'gpu_wheels'
  rows = gpu_carry.build(PREPARED / 'site', cache)
  baseline = ROOT.parent / 'shared' / 'baselines' / BASELINE
  if baseline.exists():
    (PREPARED / BASELINE).unlink(missing_ok=True)  # The source is read-only.
    shutil.copyfile(baseline, PREPARED / BASELINE)
  else:
    print(f'warning: no {baseline}: the curve will have no published one')
  (PREPARED / 'commit').write_text(commit_here() or 'unknown')
  mib = lambda n: f'{n / 2 ** 20:.2f} MiB'
  for archive, wheel, size in rows:
    print(f'{mib(size):>10}  {archive.name}'
          + (f' (wheel {mib(wheel)})' if size != wheel else ''))
  carried = sum(p.stat().st_size for p in PREPARED.rglob('*') if p.is_file())
  tree = project_bytes()
  print(f'Prepared {PREPARED}: {mib(carried)} (carry .gpu); the project '
        f'tree {mib(tree)}; a call carries {mib(carried + tree)} of 64 MiB')


def project_bytes():
  """Bytes of the files a device call copies: tracked and untracked ones
  that git does not ignore."""
  try:
    out = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others',
         '--exclude-standard'], cwd=ROOT, capture_output=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return 0
  paths = [ROOT / p for p in out.stdout.decode().split('\0') if p]
  return sum(p.stat().st_size for p in paths if p.is_file())


def commit_here():
  """The checkout's short commit, '+changes' when tracked files differ."""
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    dirty = subprocess.run(['git', 'status', '--porcelain', '-uno'],
                           cwd=ROOT, capture_output=True, text=True)
  except (OSError, subprocess.CalledProcessError):
    return None
  return head.stdout.strip() + ('+changes' if dirty.stdout.strip() else '')


def commit(given):
  if given:
    return given
  here = commit_here() if (ROOT / '.git').exists() else None
  if here:
    return here
  file = PREPARED / 'commit'
  return file.read_text().strip() if file.exists() else 'unknown'


# The task.

def done_tasks(text):
  """Tasks with a row in the SECTION table of a results.md text."""
  tasks, inside = [], False
  for line in text.splitlines():
    if line.startswith('## '):
      inside = line.strip() == SECTION
      continue
    if not inside or not line.strip().startswith('|'):
      continue
    cell = line.strip().strip('|').split('|')[0].strip().strip('`')
    if not cell or set(cell) <= set('-: ') or cell == 'task':
      continue  # The separator and the header.
    tasks.append(cell.removeprefix('dmc_'))
  return tasks


def choose_task(text):
  """The first task of ORDER without a row in the results.md text (the
  first of ORDER once all have one)."""
  done = set(done_tasks(text))
  return next((t for t in ORDER if t not in done), ORDER[0])


# Reading the run.

def read_lines(path):
  """The complete JSON lines of a file a run may be writing."""
  path = pathlib.Path(path)
  if not path.is_file():
    return []
  text = path.read_text()
  lines = []
  for line in text[:text.rfind('\n') + 1].splitlines():
    try:
      entry = json.loads(line)
    except ValueError:
      continue
    if isinstance(entry, dict) and scores._is_number(entry.get('step')):
      lines.append(entry)
  return lines


def seed_dirs(logdir):
  """{seed: LOGDIR/seed<s>} of a run of several seeds."""
  found = {}
  for path in pathlib.Path(logdir).glob('seed*'):
    if re.fullmatch(r'seed\d+', path.name) and (path / 'config.yaml').exists():
      found[int(path.name[4:])] = path
  return dict(sorted(found.items()))


def seed_curve(path, width):
  """(env steps reached, {bin edge: mean score or None}) of one seed."""
  config = scores.read_config(path)
  repeat = scores.action_repeat(config, config['task'])
  episodes = [e for e in read_lines(path / 'scores.jsonl')
              if scores._is_number(e.get('episode/score'))]
  metrics = read_lines(path / 'metrics.jsonl')
  reached = max([e['step'] for e in episodes + metrics] + [0]) * repeat
  xs = [e['step'] * repeat for e in episodes]
  ys = [e['episode/score'] for e in episodes]
  edges, means = scores.bin_scores(xs, ys, width, reached)
  return reached, {float(x): None if y != y else float(y)
                   for x, y in zip(edges, means)}


def published_points(runs, task):
  """{env steps: [score of each published seed]} of one task."""
  points = {}
  for run in runs:
    if run.task != task:
      continue
    for x, y in zip(run.xs, run.ys):
      points.setdefault(float(x), []).append(float(y))
  return points


def stats(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {'mean': sum(values) / len(values), 'min': min(values),
          'max': max(values), 'n': len(values)}


def collect(logdir, task, width, published):
  """The curve so far: each seed's and the seeds' mean score per bin next
  to the published mean and min-max at the same env steps."""
  seeds, reached = {}, {}
  for seed, path in seed_dirs(logdir).items():
    reached[seed], seeds[seed] = seed_curve(path, width)
  points = published_points(published, f'dmc_{task}')
  top = max(list(reached.values()) + list(POINTS))
  grid = sorted({x for bins in seeds.values() for x in bins} |
                {x for x in points if x <= top})
  rows = []
  for x in grid:
    values = {s: bins.get(x) for s, bins in seeds.items()}
    ours = stats(list(values.values()))
    if ours and ours['n'] < len(seeds):
      ours = None  # Not every seed has this bin yet.
    rows.append({'x': x, 'seeds': values, 'ours': ours,
                 'published': stats(points.get(x, []))})
  return {'task': task, 'bin': width, 'seeds': list(seeds),
          'reached': reached, 'rows': rows, 'verdict': verdict(rows)}


def verdict(rows):
  """PASS when the seeds' mean at every PASS point lies inside the
  published min-max, FAIL when one lies outside, else INCOMPLETE."""
  at = {r['x']: r for r in rows}
  checks = []
  for x in PASS:
    row = at.get(float(x))
    if not row or not row['ours'] or not row['published']:
      checks.append((x, None))
      continue
    pub = row['published']
    checks.append((x, pub['min'] <= row['ours']['mean'] <= pub['max']))
  if any(ok is False for _, ok in checks):
    result = 'FAIL'
  elif all(ok for _, ok in checks):
    result = 'PASS'
  else:
    result = 'INCOMPLETE'
  return {'result': result,
          'points': {str(x): ok for x, ok in checks}}


def rates(logdir, repeat):
  """Throughput from each seed's metrics.jsonl, leaving out the first
  interval with train updates (it holds the compile)."""
  out = {'updates_per_s': {}, 'agent_steps_per_s': {}}
  fracs = {}
  for seed, path in seed_dirs(logdir).items():
    lines = [e for e in read_lines(path / 'metrics.jsonl')
             if 'fps/train' in e]
    started = [i for i, e in enumerate(lines) if e['fps/train'] > 0]
    steady = lines[started[0] + 1:] if started else []
    if started and not steady:  # A run too short to leave the compile out.
      steady = lines[started[0]:]
      out['includes_compile'] = True
    if not steady:
      continue
    mean = lambda key: sum(e.get(key, 0) for e in steady) / len(steady)
    out['updates_per_s'][seed] = mean('fps/train')
    out['agent_steps_per_s'][seed] = mean('fps/env')
    for key in ('learner/wait_frac', 'learner/dispatch_frac'):
      if any(key in e for e in steady):
        fracs[key] = mean(key)
  out['env_steps_per_s'] = repeat * sum(out['agent_steps_per_s'].values())
  out.update(fracs)
  return out


def compile_times(log):
  """Seconds of XLA compilation logged by jax_log_compiles: the total, the
  largest programs, and the programs the compilation cache held."""
  times = {}
  text = pathlib.Path(log).read_text() if pathlib.Path(log).exists() else ''
  for name, secs in re.findall(
      r'Finished XLA compilation of (\S+) in ([\d.]+) sec', text):
    times[name] = times.get(name, 0.0) + float(secs)
  hits = re.findall(r"Persistent compilation cache hit for '([^']+)'", text)
  top = sorted(times.items(), key=lambda kv: -kv[1])[:3]
  return {'total_s': sum(times.values()), 'largest': dict(top),
          'cache_hits': len(hits)}


class GpuMemory:
  """Polls nvidia-smi for the GPU memory in use; the peak in MiB (None
  without nvidia-smi)."""

  def __init__(self, every=1.0):
    self.smi = shutil.which('nvidia-smi')
    self.peak = None
    self.every = every
    self.stop = threading.Event()
    if self.smi:
      threading.Thread(target=self._poll, daemon=True).start()

  def _poll(self):
    while not self.stop.is_set():
      try:
        out = subprocess.run(
            [self.smi, '--query-gpu=memory.used',
             '--format=csv,noheader,nounits'],
            capture_output=True, text=True, timeout=10).stdout
        used = max(float(v) for v in out.split())
        self.peak = used if self.peak is None else max(self.peak, used)
      except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
      self.stop.wait(self.every)


# Outputs.

def cell(s):
  if not s:
    return '-'
  return f'{s["mean"]:.0f} [{s["min"]:.0f}-{s["max"]:.0f}]'


def label(x):
  return f'{x / 1000:g}k' if x >= 1000 else f'{x:g}'


def curve_table(curve):
  seeds = curve['seeds']
  lines = ['| env steps | ' + ' | '.join(f'seed {s}' for s in seeds) +
           ' | ours mean [min-max] | published mean [min-max] |',
           '|---|' + '---|' * (len(seeds) + 2)]
  for row in curve['rows']:
    values = [row['seeds'].get(s) for s in seeds]
    lines.append(f'| {label(row["x"])} | ' + ' | '.join(
        '-' if v is None else f'{v:.0f}' for v in values) +
        f' | {cell(row["ours"])} | {cell(row["published"])} |')
  return lines


def results_row(curve, info):
  """The row for the SECTION table of docs/results.md."""
  at = {r['x']: r for r in curve['rows']}
  cells = []
  for x in POINTS:
    row = at.get(float(x), {})
    cells.append(f'{cell(row.get("ours"))} / {cell(row.get("published"))}')
  ups = info['rates'].get('updates_per_s', {})
  ups = f'{sum(ups.values()) / len(ups):.1f}' if ups else '-'
  result = {'PASS': 'yes', 'FAIL': 'no'}.get(
      curve['verdict']['result'], 'incomplete')
  return (f'| {curve["task"]} | ' + ' | '.join(cells) +
          f' | {result} | {ups} | {info["gpu"]} | {info["date"]} | '
          f'{info["commit"]} |')


def learning_section(curve, info):
  r = info['rates']
  reached = curve['reached']
  lines = [f'## Learning curve: dmc_{curve["task"]}', '',
           f'`{info["command"]}`', '',
           f'{info["status"]} (train.log){info["resumed"]}. '
           + (f'Trained on the stand-in task {info["run_task"]}. '
              if info['run_task'] != f'dmc_{curve["task"]}' else '')
           + 'Env steps reached per seed: ' + (', '.join(
               f'{s}: {v:,.0f}' for s, v in reached.items()) or 'none yet')
           + f'. Bins of {curve["bin"]:,} env steps (episodes ending in '
           '(x - bin, x]), published: ' + info['baseline'] + '.', '']
  if info.get('tail'):
    lines += ['The end of train.log:', '', '```', *info['tail'], '```', '']
  lines += curve_table(curve) + ['']
  v = curve['verdict']
  lines.append(
      f'Pass criterion (the {len(curve["seeds"])}-seed mean at '
      f'{", ".join(label(x) for x in PASS)} env steps inside the published '
      f'min-max): **{v["result"]}** (' + ', '.join(
          f'{label(int(x))} {"-" if ok is None else "in" if ok else "out"}'
          for x, ok in v['points'].items()) + ').')
  lines.append('')
  ups = r.get('updates_per_s', {})
  steps = r.get('agent_steps_per_s', {})
  lines += [
      '| figure | value |', '|---|---|',
      f'| env steps/s (all seeds) | {r.get("env_steps_per_s", 0):,.0f} |',
      '| updates/s per seed | ' + (', '.join(
          f'seed {s}: {u:.2f}' for s, u in ups.items()) or 'n/a yet') + (
              ' (with the compile: the run was too short to leave it out)'
              if r.get('includes_compile') else '') + ' |',
      '| agent steps/s per seed | ' + (', '.join(
          f'seed {s}: {u:.1f}' for s, u in steps.items()) or 'n/a yet')
      + ' |']
  for key in ('learner/wait_frac', 'learner/dispatch_frac'):
    if key in r:
      lines.append(f'| `{key}` | {r[key]:.2f} |')
  comp = info['compile']
  largest = ', '.join(
      f'{name} {secs:.1f} s' for name, secs in comp['largest'].items())
  lines += [
      f'| XLA compile (jax_log_compiles) | {comp["total_s"]:.1f} s'
      + (f' ({largest})' if largest else '') + (
          f'; {comp["cache_hits"]} programs from the compilation cache'
          if comp['cache_hits'] else '') + ' |',
      f'| start-up to "Start training" | {info["startup"]} |',
      f'| peak GPU memory (nvidia-smi, no preallocation) | '
      f'{info["memory"]} |', '']
  lines += ['### For docs/results.md', '', '```',
            f'{SECTION}', '', info['recipe'],
            '', '| task | ' + ' | '.join(label(x) for x in POINTS) +
            ' | pass | updates/s | GPU | date | commit |',
            '|---|' + '---|' * (len(POINTS) + 5),
            results_row(curve, info), '```', '']
  return lines


def plot(curve, path):
  import matplotlib
  matplotlib.use('Agg')  # No display needed.
  import matplotlib.pyplot as plt
  from matplotlib.ticker import EngFormatter
  fig, ax = plt.subplots(figsize=(7, 4.2))
  pub = [r for r in curve['rows'] if r['published']]
  if pub:
    xs = [r['x'] for r in pub]
    ax.fill_between(xs, [r['published']['min'] for r in pub],
                    [r['published']['max'] for r in pub], color='0.6',
                    alpha=0.3, lw=0, label='published min-max')
    ax.plot(xs, [r['published']['mean'] for r in pub], color='0.3',
            ls='--', lw=1.5,
            label=f'published mean ({pub[0]["published"]["n"]} seeds)')
  for i, seed in enumerate(curve['seeds']):
    points = [(r['x'], r['seeds'][seed]) for r in curve['rows']
              if r['seeds'].get(seed) is not None]
    if points:
      ax.plot(*zip(*points), color=f'C{i}', lw=0.8, alpha=0.6,
              label=f'seed {seed}')
  ours = [(r['x'], r['ours']['mean']) for r in curve['rows'] if r['ours']]
  if ours:
    ax.plot(*zip(*ours), color='C3', lw=2.2, label='ours, mean of seeds')
  ax.set_title(f'dmc_{curve["task"]} (proprio): mean episode score per '
               f'{curve["bin"]:,} env steps', fontsize=10)
  ax.set_xlabel('env steps')
  ax.set_ylabel('episode score')
  ax.xaxis.set_major_formatter(EngFormatter(sep=''))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save(out, lines):
  # After every stage and poll: a command killed at its limit still
  # returns the figures so far.
  (out / 'summary.md').write_text('\n'.join(lines) + '\n')


# Running things.

class Budget:

  def __init__(self, seconds):
    self.end = time.time() + seconds

  def left(self, reserve=0):
    return max(0.0, self.end - time.time() - reserve)


def run(cmd, log, timeout, env):
  """Runs cmd with its output appended to log as it comes; returns (exit
  code or 'timeout', seconds, output)."""
  start = time.time()
  with open(log, 'a') as f:
    f.write(f'\n$ {" ".join(cmd)}\n')
    f.flush()
    begin = f.tell()
    try:
      code = subprocess.run(
          cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
          timeout=max(1, timeout)).returncode
    except subprocess.TimeoutExpired:
      code = 'timeout'
  with open(log) as f:
    f.seek(begin)
    output = f.read()
  return code, time.time() - start, output


def stop(proc, grace):
  """SIGTERM to the run (it saves and ends as preempted), then SIGKILL to
  its process group (its env workers) after grace seconds."""
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(grace)
    except subprocess.TimeoutExpired:
      pass
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  proc.wait()


def versions(env):
  code = ('import sys, jax, jaxlib, numpy; '
          'from importlib import metadata; '
          'print("python", sys.version.split()[0]); '
          'print("jax", jax.__version__, "jaxlib", jaxlib.__version__, '
          '"numpy", numpy.__version__); '
          '[print(d.metadata["Name"], d.version) for d in '
          'metadata.distributions() if "jax-cuda" in d.metadata["Name"] '
          'or d.metadata["Name"] in ("mujoco", "dm_control", "dm-control")]; '
          'print("devices", jax.devices())')
  out = subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  lines = (out.stdout + out.stderr).strip().splitlines()
  smi = shutil.which('nvidia-smi')
  if smi:
    gpu = subprocess.run([smi, '-L'], capture_output=True, text=True)
    lines += gpu.stdout.strip().splitlines()
  return lines


def gpu_name():
  smi = shutil.which('nvidia-smi')
  if not smi:
    return 'CPU'
  out = subprocess.run([smi, '--query-gpu=name', '--format=csv,noheader'],
                       capture_output=True, text=True).stdout.strip()
  return out.splitlines()[0].replace('NVIDIA ', '') if out else 'GPU'


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='')
  parser.add_argument('--prepare', action='store_true')
  parser.add_argument('--cpu', action='store_true',
                      help='dry run on the CPU with tiny sizes')
  parser.add_argument('--budget', type=float, default=450,
                      help='seconds for all stages together')
  parser.add_argument('--task', default='', help='DMC task (walker_walk); '
                      'default: the first of ORDER without a results row')
  parser.add_argument('--results', default=str(ROOT / 'docs' / 'results.md'))
  parser.add_argument('--env_steps', type=int, default=0,
                      help='env steps to train each seed for')
  parser.add_argument('--seeds', type=int, default=0)
  parser.add_argument('--baseline', default='', help='published curves '
                      f'(default: .gpu/{BASELINE}, else ../shared/baselines)')
  parser.add_argument('--work', default='', help='folder of the installed '
                      'packages, compile cache and run (GPU default '
                      f'{GPU["work"]}; CPU: a new temporary one)')
  parser.add_argument('--cache_dir', default='', help='JAX compilation '
                      'cache (default: WORK/jax_cache)')
  parser.add_argument('--fresh', action='store_true',
                      help='start the run over instead of continuing it')
  parser.add_argument('--tests', action='store_true',
                      help='also run the GPU-relevant tests')
  parser.add_argument('--commit', default='', help='the commit the tree '
                      'holds (default: git, else .gpu/commit)')
  args = parser.parse_args(argv)
  if not args.prepare and not args.out:
    parser.error('--out is required')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.prepare:
    prepare()
    return 0
  started = time.time()
  budget = Budget(args.budget)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  sizes = CPU if args.cpu else GPU
  work = pathlib.Path(args.work or sizes['work'] or tempfile.mkdtemp(
      prefix='gpu_check_'))
  work.mkdir(parents=True, exist_ok=True)
  cache = args.cache_dir or str(work / 'jax_cache')
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  if args.cpu:
    env['JAX_PLATFORMS'] = 'cpu'
  installed = gpu_carry.install(PREPARED / 'site', work / 'site')
  if (work / 'site').exists():
    env['PYTHONPATH'] = os.pathsep.join(
        [str(work / 'site'), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
  results = pathlib.Path(args.results)
  task = (args.task or choose_task(
      results.read_text() if results.exists() else '')).removeprefix('dmc_')
  info = {'gpu': 'CPU' if args.cpu else gpu_name(),
          'date': time.strftime('%Y-%m-%d'), 'commit': commit(args.commit)}
  head = ['# GPU check', '',
          f'Started {time.strftime("%Y-%m-%d %H:%M")}, budget '
          f'{args.budget:.0f} s, {"CPU dry run" if args.cpu else info["gpu"]}'
          f', commit {info["commit"]}.', '',
          '## Versions and devices', '', '```', *installed,
          *versions(env), '```', '']
  save(out, head)
  stage = dict(args=args, sizes=sizes, budget=budget, out=out, work=work,
               cache=cache, env=env, task=task, info=info)
  head += learning_stage(head, **stage)
  save(out, head)
  if sizes['bench'] and budget.left() >= sizes['bench_min']:
    head += throughput_stage(**stage)
    save(out, head)
  if args.tests:
    head += tests_stage(**stage)
    save(out, head)
  if not args.work and args.cpu:
    shutil.rmtree(work, ignore_errors=True)
  head.append(f'Done after {time.time() - started:.0f} s.')
  save(out, head)
  print('\n'.join(head))
  return 0


def learning_stage(head, args, sizes, budget, out, work, cache, env, task,
                   info):
  """Trains the seeds, rewriting curve.json, curve.png and summary.md (head
  and the stage's section) as the run goes; returns the section."""
  stand_in = args.cpu and gpu_carry.absent('dm_control')
  run_task = STAND_IN if stand_in else f'dmc_{task}'
  from dreamerv3 import main as dmain
  config = dmain.parse([*sizes['train'], '--task', run_task])
  repeat = scores.action_repeat(config, run_task)
  env_steps = args.env_steps or sizes['env_steps']
  logdir = work / f'run_{run_task}'
  resumed = ''
  if args.fresh or not (logdir / 'ckpt' / 'latest').exists():
    shutil.rmtree(logdir, ignore_errors=True)
  else:
    first = next(iter(seed_dirs(logdir).values()), logdir)
    resumed = (f', continued from {scores.last_step(first):,.0f} agent '
               'steps of an earlier call')
  deadline = budget.end - sizes['after']
  duration = max(sizes['min_train'],
                 int(deadline - time.time() - sizes['startup']))
  # What the run is; then how this call runs it.
  core = [*sizes['train'], '--task', run_task,
          '--run.seeds', str(args.seeds or sizes['seeds']),
          '--run.parallel_envs', 'True',
          '--run.steps', str(-(-env_steps // repeat)),
          '--run.duration', str(duration)]
  flags = core + ['--run.log_every', str(sizes['log_every']),
                  '--run.report_every', '0', '--run.save_every', '100000',
                  '--logger.outputs', 'terminal,jsonl',
                  '--jax.cache_dir', cache]
  if args.cpu:
    flags += ['--jax.platform', 'cpu']
  cmd = [sys.executable, 'dreamerv3/main.py', *flags,
         '--logdir', str(logdir)]
  steps = core[core.index('--run.steps') + 1]
  info.update(
      command='dreamerv3/main.py ' + ' '.join(core),
      recipe=f'`python3 scripts/gpu_check.py --task TASK` on one GPU runs '
      f'`dreamerv3/main.py {" ".join(sizes["train"])} --task dmc_TASK '
      f'--run.seeds {args.seeds or sizes["seeds"]} --run.parallel_envs True '
      f'--run.steps {steps}` for what a {args.budget:.0f} s budget leaves.',
      run_task=run_task, resumed=resumed, startup='-', memory='n/a')
  baseline = pathlib.Path(args.baseline) if args.baseline else next(
      (p for p in (PREPARED / BASELINE,
                   ROOT.parent / 'shared' / 'baselines' / BASELINE)
       if p.exists()), None)
  published = scores.load_baseline(baseline) if baseline else []
  info['baseline'] = baseline.name if baseline else 'none found'
  run_env = dict(env, JAX_LOG_COMPILES='1')
  if sizes['xla_flags']:
    run_env['XLA_FLAGS'] = (
        env.get('XLA_FLAGS', '') + ' ' + sizes['xla_flags']).strip()
  run_env.setdefault('MUJOCO_GL', 'disable')  # Proprio only: no GL.
  if not args.cpu:
    # Memory as the run needs it, not JAX's up-front 75% of the GPU.
    run_env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  log = out / 'train.log'

  def report(status):
    info['status'] = status
    info['rates'] = rates(logdir, repeat)
    info['compile'] = compile_times(log)
    if memory.peak is not None:
      info['memory'] = f'{memory.peak / 1024:.1f} GiB'
    curve = collect(logdir, task, sizes['bin'], published)
    curve.update(run_task=run_task, repeat=repeat, rates=info['rates'],
                 compile=info['compile'], memory=info['memory'],
                 startup=info['startup'], command=info['command'],
                 results_row=results_row(curve, info))
    (out / 'curve.json').write_text(json.dumps(curve, indent=1))
    plot(curve, out / 'curve.png')
    lines = learning_section(curve, info)
    save(out, head + lines)
    return lines

  memory = GpuMemory()
  launched = time.time()
  with open(log, 'a') as f:
    f.write(f'$ {" ".join(cmd)}\n')
    f.flush()
    # Its own session: the env workers are stopped with it.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=f,
                            stderr=subprocess.STDOUT, start_new_session=True)
  try:
    last = time.time()
    while proc.poll() is None:
      if time.time() > deadline:
        stop(proc, grace=min(30, max(5, budget.left() - 5)))
        break
      time.sleep(1 if args.cpu else 2)
      if info['startup'] == '-' and (
          'Start training at step' in log.read_text()):
        info['startup'] = f'{time.time() - launched:.0f} s'
      if time.time() - last >= sizes['poll']:
        last = time.time()
        try:
          report(f'running, {last - launched:.0f} s so far')
        except Exception as e:  # A file caught mid-write: the next poll.
          print(f'warning: outputs not updated: {e!r}', file=sys.stderr)
  finally:
    stop(proc, grace=30)
    memory.stop.set()
  if proc.returncode not in (0, 3):  # 3: stopped at the budget, saved.
    info['tail'] = [line for line in log.read_text().splitlines()
                    if 'XLA compilation' not in line
                    and 'Compiling ' not in line][-20:]
  why = ' (stopped at the budget, checkpoint saved)' \
      if proc.returncode == 3 else ''
  return report(f'exit {proc.returncode}{why} after '
                f'{time.time() - launched:.0f} s')


def throughput_stage(args, sizes, budget, out, work, cache, env, task, info):
  """One seed's train throughput (scripts/bench.py train)."""
  cmd = [sys.executable, 'scripts/bench.py', 'train', *sizes['train'],
         '--task', info['run_task'], *sizes['bench'],
         '--jax.cache_dir', cache]
  code, secs, output = run(cmd, out / 'bench.log',
                           budget.left(sizes['after']), env)
  result = next((json.loads(line[5:]) for line in output.splitlines()
                 if line.startswith('JSON ')), {})
  return ['## One seed: train throughput', '',
          f'`scripts/bench.py train {" ".join(sizes["train"])} --task '
          f'{info["run_task"]} {" ".join(sizes["bench"])}`: exit {code} '
          f'after {secs:.0f} s (bench.log).', '', '| figure | value |',
          '|---|---|'] + [f'| {k} | {fmt(v)} |' for k, v in result.items()
                          ] + ['']


def tests_stage(args, sizes, budget, out, work, cache, env, task, info):
  """The GPU-relevant tests, in what is left."""
  # Verbose: a stage stopped at its limit still names the tests it ran.
  cmd = [sys.executable, '-m', 'pytest', '-v', '-p', 'no:cacheprovider',
         *sizes['tests']]
  # Tests that name no compilation cache share the stages' one.
  test_env = dict(env, JAX_COMPILATION_CACHE_DIR=cache)
  if not args.cpu:
    # The tests check numbers, not speed: skip XLA's autotuning (timing
    # kernel variants in every compile took most of 50 s per test).
    test_env['XLA_FLAGS'] = (
        env.get('XLA_FLAGS', '') + ' --xla_gpu_autotune_level=0').strip()
  code, secs, output = run(cmd, out / 'tests.log', budget.left(5), test_env)
  last = (output.strip().splitlines() or ['(no output)'])[-1]
  return ['## Tests', '', f'`pytest {" ".join(sizes["tests"])}`: exit '
          f'{code} after {secs:.0f} s: {last} (tests.log)', '']


def fmt(value):
  if isinstance(value, float):
    return f'{value:,.3f}' if abs(value) < 100 else f'{value:,.1f}'
  return str(value)


if __name__ == '__main__':
  sys.exit(main())
