"""The prepared GPU script: its learning stage end to end on the CPU with
tiny sizes, so the command a session with a lent GPU runs never rots; the
task chooser; the trimmed dm_control it carries."""

import gzip
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dreamerv3 import main as dmain  # noqa: E402
from scripts import bench, gpu_carry, gpu_check  # noqa: E402

BASELINE = ROOT.parent / 'shared' / 'baselines' / gpu_check.BASELINE
HAS_DMC = importlib.util.find_spec('dm_control') is not None


def test_gpu_stages_parse():
  # The GPU sizes are never run here: their flags must still parse.
  config = dmain.parse([*gpu_check.GPU['train'], '--task', 'dmc_walker_walk',
                        '--run.seeds', '4', '--run.parallel_envs', 'True'])
  assert config.run.train_ratio == 512 and config.agent.dyn.deter == 2048
  assert (config.batch_size, config.batch_length) == (16, 64)
  assert config.env.dmc.repeat == 2 and not config.env.dmc.image
  options, rest = bench.split_args('train', gpu_check.GPU['bench'])
  assert options['updates'] == 20 and not options['flops'] and not rest
  for path in gpu_check.GPU['tests']:
    assert (ROOT / path).exists(), path


RESULTS = f"""# Results

## Learning

| task | 4k |
| --- | --- |
| cartpole_balance | 100 |

{gpu_check.SECTION}

Text.

| task | 20k | 30k | 40k | 50k | pass |
| --- | --- | --- | --- | --- | --- |
| walker_walk | - / 89 [54-125] | - | - | - | incomplete |
| `dmc_cartpole_balance` | - | - | - | - | no |

## On a GPU
| finger_spin | 1 |
"""


def test_task_chooser_reads_the_results_table():
  assert gpu_check.done_tasks(RESULTS) == ['walker_walk', 'cartpole_balance']
  assert gpu_check.choose_task(RESULTS) == 'walker_stand'
  assert gpu_check.choose_task('# Results\n') == 'walker_walk'
  done = RESULTS.replace('| `dmc_cartpole',
                         '| walker_stand | 1 |\n| `dmc_cartpole')
  assert gpu_check.choose_task(done) == 'finger_spin'
  every = gpu_check.SECTION + '\n\n| task |\n|---|\n' + ''.join(
      f'| {t} |\n' for t in gpu_check.ORDER)
  assert gpu_check.choose_task(every) == gpu_check.ORDER[0]


def test_verdict():
  def rows(means):
    return [{'x': float(x), 'ours': None if m is None else {'mean': m},
             'published': {'mean': 5, 'min': 2, 'max': 8}}
            for x, m in zip((30000, 40000, 50000), means)]
  assert gpu_check.verdict(rows([2, 5, 8]))['result'] == 'PASS'
  assert gpu_check.verdict(rows([2, 9, None]))['result'] == 'FAIL'
  assert gpu_check.verdict(rows([3, 4, None]))['result'] == 'INCOMPLETE'


def published(path, task):
  """{x: [ys]} of the task's published runs, read by hand."""
  with gzip.open(path, 'rt') as f:
    records = json.load(f)
  points = {}
  for record in records:
    if record['task'] == task:
      for x, y in zip(record['xs'], record['ys']):
        if y is not None:
          points.setdefault(x, []).append(y)
  return points


def slow_bins(path, width):
  """{bin edge: mean} of one seed's scores.jsonl, by hand: env steps are
  the step times the action repeat in its config.yaml."""
  import ruamel.yaml as yaml
  config = yaml.YAML(typ='safe').load((path / 'config.yaml').read_text())
  repeat = config['env']['dmc']['repeat'] if config['task'].startswith(
      'dmc_') else 1
  episodes = [json.loads(line) for line in
              (path / 'scores.jsonl').read_text().splitlines()]
  reached = max(json.loads(line)['step'] for line in (
      path / 'metrics.jsonl').read_text().splitlines()) * repeat
  bins = {}
  edge = width
  while edge <= reached:
    inside = [e['episode/score'] for e in episodes
              if edge - width < e['step'] * repeat <= edge]
    bins[edge] = sum(inside) / len(inside) if inside else None
    edge += width
  return bins


def test_gpu_check_dry_run(tmp_path, jax_cache):
  (tmp_path / 'results.md').write_text(RESULTS)
  baseline = BASELINE
  if not baseline.exists():  # Outside this project's machines.
    baseline = tmp_path / gpu_check.BASELINE
    with gzip.open(baseline, 'wt') as f:
      json.dump([{'task': 'dmc_walker_stand', 'method': 'dreamerv3',
                  'seed': s, 'xs': [10000 * (i + 1) for i in range(6)],
                  'ys': [100 * i + 10 * s for i in range(6)]}
                 for s in range(3)], f)
  out, work = tmp_path / 'out', tmp_path / 'work'
  proc = subprocess.run(
      [sys.executable, 'scripts/gpu_check.py', '--cpu', '--out', str(out),
       '--work', str(work), '--cache_dir', str(jax_cache), '--results',
       str(tmp_path / 'results.md'), '--baseline', str(baseline),
       '--budget', '300'], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  curve = json.loads((out / 'curve.json').read_text())
  # The first task without a results row, trained on itself where
  # dm_control is installed, else on the stand-in.
  assert curve['task'] == 'walker_stand'
  assert curve['run_task'] == ('dmc_walker_stand' if HAS_DMC
                               else gpu_check.STAND_IN)
  rows = {row['x']: row for row in curve['rows']}
  # The published mean and min-max at each 10k env steps, from the file.
  points = published(baseline, 'dmc_walker_stand')
  for x in gpu_check.POINTS:
    ys = points[x]
    assert rows[x]['published'] == pytest.approx(
        {'mean': sum(ys) / len(ys), 'min': min(ys), 'max': max(ys),
         'n': len(ys)})
  # Each seed's bins are its scores.jsonl binned by hand; the seeds' mean
  # and min-max are over them.
  logdir = work / f'run_{curve["run_task"]}'
  assert curve['seeds'] == [0, 1]
  width = curve['bin']
  for seed in curve['seeds']:
    bins = slow_bins(logdir / f'seed{seed}', width)
    assert sum(v is not None for v in bins.values()) >= 2
    for x, value in bins.items():
      assert rows[x]['seeds'][str(seed)] == pytest.approx(value)
  for x, row in rows.items():
    values = [v for v in row['seeds'].values() if v is not None]
    if len(values) == 2:
      assert row['ours'] == pytest.approx(
          {'mean': sum(values) / 2, 'min': min(values), 'max': max(values),
           'n': 2})
  assert curve['verdict']['result'] == 'INCOMPLETE'  # Far from 30k.
  # Updates/s for each seed; the results row reads back as the task's.
  ups = curve['rates']['updates_per_s']
  assert sorted(ups) == ['0', '1'] and all(v > 0 for v in ups.values())
  row = curve['results_row']
  assert gpu_check.done_tasks(
      f'{gpu_check.SECTION}\n\n| task |\n|---|\n{row}\n') == ['walker_stand']
  summary = (out / 'summary.md').read_text()
  assert '## Learning curve: dmc_walker_stand' in summary
  assert (out / 'curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # What comes back from a device call: at most 8 files, no folders.
  files = list(out.iterdir())
  assert len(files) <= 8 and all(f.is_file() for f in files), files


SITE = ROOT / '.gpu' / 'site'


@pytest.mark.skipif(not list(SITE.glob('dm_control-*.zip')),
                    reason='no prepared .gpu (python scripts/gpu_check.py '
                    '--prepare)')
def test_carried_dm_control_steps_tasks(tmp_path):
  """The carried packages load and step the GPU sessions' tasks with
  nothing else but numpy and scipy (what the GPU machine has): Python runs
  without its site-packages. Compiled packages built for another Python
  are stood in for by this Python's own, trimmed by the same rules."""
  carried = sum(p.stat().st_size for p in SITE.parent.rglob('*')
                if p.is_file())
  assert carried < 40 * 2 ** 20  # With the project, within a call's 64 MiB.
  site = tmp_path / 'site'
  tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
  for archive in sorted(SITE.iterdir()):
    other = gpu_carry.python_tag(archive) not in (None, tag)
    if not other:
      import zipfile
      with zipfile.ZipFile(archive) as z:
        z.extractall(site)
      continue
    requirement = next(r for r in gpu_carry.TRIMMED
                       if archive.name.startswith(gpu_carry.project(r)))
    if not gpu_carry.trim_installed(requirement, site):
      pytest.skip(f'{requirement} is built for {archive.name}; not installed '
                  'here to stand in')
  # numpy and scipy alone, with their bundled libraries.
  from importlib import metadata
  present = tmp_path / 'present'
  present.mkdir()
  for name in gpu_carry.PRESENT:
    tops = {f.parts[0] for f in metadata.distribution(name).files}
    for top in tops:
      source = metadata.distribution(name).locate_file(top)
      if source.exists() and not (present / top).exists():
        (present / top).symlink_to(source)
  tasks = [t.split('_', 1) if not t.startswith('ball_in_cup') else
           ('ball_in_cup', 'catch') for t in gpu_check.ORDER]
  code = f"""
import numpy as np
import dm_control, lxml, mujoco
for module in (dm_control, lxml, mujoco):
  assert module.__file__.startswith({str(site)!r}), module.__file__
from dm_control import suite
for domain, task in {tasks!r}:
  env = suite.load(domain, task, task_kwargs={{'random': 0}})
  spec = env.action_spec()
  env.reset()
  for _ in range(5):
    step = env.step(np.random.uniform(spec.minimum, spec.maximum))
  assert np.isfinite(step.reward), (domain, task)
print('stepped', len({tasks!r}))
"""
  env = dict(os.environ, PYTHONPATH=f'{site}{os.pathsep}{present}',
             MUJOCO_GL='disable')
  proc = subprocess.run([sys.executable, '-S', '-c', code], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'stepped 6' in proc.stdout
