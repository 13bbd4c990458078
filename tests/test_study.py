"""scripts/study.py: run layout over tasks, methods and seeds,
experiment.json, the job array submit script, the named studies (the
DreamerV3-XP experiments and the learning suite with its report); and
scripts/scores.py reading that layout. Nothing is trained."""

import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'scripts'))

import scores  # noqa: E402
import study  # noqa: E402


def dry(capsys, argv):
  assert study.main(['--dry'] + argv) == 0
  lines = [l for l in capsys.readouterr().out.splitlines()
           if 'main.py' in l]
  return [shlex.split(l) for l in lines]


def flag(cmd, name):
  return cmd[cmd.index(name) + 1]


def test_layout_one_and_several_tasks(tmp_path, capsys):
  root = tmp_path / 'study'
  # No --tasks: the old layout ROOT/<method>/seed<k>.
  cmds = dry(capsys, ['--root', str(root), '--methods', 'uniform',
                      'xp_replay', '--seeds', '0', '1', '--configs', 'debug'])
  assert [flag(c, '--logdir') for c in cmds] == [
      str(root / m / f'seed{s}') for m in ('uniform', 'xp_replay')
      for s in (0, 1)]
  assert all('--task' not in c for c in cmds)
  # One task: same layout, with --task.
  cmds = dry(capsys, ['--root', str(root), '--methods', 'uniform',
                      '--seeds', '3', '--tasks', 'dummy_disc'])
  assert flag(cmds[0], '--logdir') == str(root / 'uniform' / 'seed3')
  assert flag(cmds[0], '--task') == 'dummy_disc'
  # Several tasks: ROOT/<task>/<method>/seed<k>, '/' in names replaced.
  (root / 'bsuite_catch-0' / 'uniform' / 'seed0').mkdir(parents=True)
  (root / 'bsuite_catch-0' / 'uniform' / 'seed0' / 'done').write_text('1')
  cmds = dry(capsys, ['--root', str(root), '--methods', 'uniform',
                      'disagreement_exp_decay', '--seeds', '0',
                      '--tasks', 'bsuite_catch/0', 'dummy_disc',
                      '--configs', 'debug', '--', '--run.steps', '100'])
  got = [(flag(c, '--task'), flag(c, '--logdir')) for c in cmds]
  assert got == [
      ('bsuite_catch/0',
       str(root / 'bsuite_catch-0' / 'disagreement_exp_decay' / 'seed0')),
      ('dummy_disc', str(root / 'dummy_disc' / 'uniform' / 'seed0')),
      ('dummy_disc',
       str(root / 'dummy_disc' / 'disagreement_exp_decay' / 'seed0'))]
  cmd = cmds[0]
  assert cmd[cmd.index('--configs') + 1:][:2] == [
      'debug', 'disagreement_exp_decay']
  assert cmd[-2:] == ['--run.steps', '100']
  assert not (root / 'experiment.json').exists()  # A dry run writes nothing.


def test_one_process_per_method(tmp_path, capsys):
  # The seeds of each method as one program: ROOT/<method> holds the run,
  # its seeds write ROOT/<method>/seed<k> as separate runs would.
  root = tmp_path / 'study'
  cmds = dry(capsys, ['--root', str(root), '--methods', 'uniform',
                      'recency', '--seeds', '5', '6', '7', '--configs',
                      'debug', '--one_process'])
  assert [flag(c, '--logdir') for c in cmds] == [
      str(root / 'uniform'), str(root / 'recency')]
  assert all(flag(c, '--run.seeds') == '5,6,7' and flag(c, '--seed') == '5'
             for c in cmds)


def test_unknown_block_refused(tmp_path):
  with pytest.raises(SystemExit):
    study.main(['--root', str(tmp_path), '--methods', 'nope', '--dry'])


def test_slurm_array_script_and_experiment_json(tmp_path, capsys):
  root = tmp_path / 'xp'
  argv = ['--root', str(root), '--methods', 'uniform',
          'disagreement_slope_ema', '--seeds', '0', '1',
          '--tasks', 'dummy_disc', 'dummy_cont', '--configs', 'debug',
          '--name', 'XP test', '--description', 'two tasks, two methods',
          '--slurm', '--slurm_gpus', '0', '--', '--run.steps', '50']
  assert study.main(argv) == 0
  out = capsys.readouterr().out.strip().splitlines()
  script = pathlib.Path(out[-1])
  assert script == root / 'slurm' / 'XP-test.sh' and script.exists()
  info = json.loads((root / 'experiment.json').read_text())
  assert info['name'] == 'XP test'
  assert info['description'] == 'two tasks, two methods'
  assert info['tasks'] == ['dummy_disc', 'dummy_cont']
  assert info['seeds'] == [0, 1] and info['extra'] == ['--run.steps', '50']
  assert not list(root.glob('*/*/seed*'))  # Nothing ran.
  subprocess.run(['bash', '-n', str(script)], check=True)
  # Submit with a stand-in sbatch that records its arguments and the
  # environment the job would inherit.
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  submitted = tmp_path / 'sbatch.json'
  fake_sbatch = bindir / 'sbatch'
  fake_sbatch.write_text(
      f'#!{sys.executable}\nimport json, os, sys\n'
      f'json.dump([sys.argv[1:], os.environ["RUNS"], '
      f'os.environ["DREAMER_ROOT"]], open({str(submitted)!r}, "w"))\n')
  fake_sbatch.chmod(0o755)
  path = f'{bindir}{os.pathsep}{os.environ["PATH"]}'
  subprocess.run([str(script), '--qos=high'], check=True,
                 env=dict(os.environ, PATH=path))
  options, runs, repo = json.loads(submitted.read_text())
  assert options[-1] == 'scripts/slurm/array.sbatch'
  assert '--array=0-7' in options and '--qos=high' in options
  assert not any(o.startswith('--gres') for o in options)
  assert repo == str(ROOT) and len(pathlib.Path(runs).read_text(
      ).splitlines()) == 8
  # Run array index 5 of the real array.sbatch with a stand-in interpreter
  # that records its argv.
  fake = tmp_path / 'fakepython'
  record = tmp_path / 'argv.json'
  fake.write_text(
      f'#!{sys.executable}\nimport json, sys\n'
      f'json.dump(sys.argv[1:], open({str(record)!r}, "w"))\n')
  fake.chmod(0o755)
  env = dict(os.environ, SLURM_ARRAY_TASK_ID='5', PYTHON=str(fake),
             RUNS=runs, DREAMER_ROOT=repo)
  subprocess.run(['bash', str(ROOT / 'scripts/slurm/array.sbatch')],
                 check=True, env=env, capture_output=True)
  args = json.loads(record.read_text())
  logdir = root / 'dummy_cont' / 'uniform' / 'seed1'
  assert args[0].endswith('dreamerv3/main.py')
  assert flag(args, '--logdir') == str(logdir)
  assert flag(args, '--task') == 'dummy_cont'
  assert flag(args, '--seed') == '1' and args[-2:] == ['--run.steps', '50']
  assert (logdir / 'done').exists()
  # Regenerating leaves out the finished run.
  assert study.main(argv) == 0
  text = pathlib.Path(capsys.readouterr().out.strip().splitlines()[-1])
  assert '--array=0-6' in text.read_text()
  assert json.loads((root / 'experiment.json').read_text())['created'] == \
      info['created']


def test_experiment_studies(tmp_path, capsys):
  cmds = dry(capsys, [
      '--study', 'run_latent_disagreement_experiment_exp_decay', '--seeds',
      '0', '1', '2', '--root', str(tmp_path), '--tasks', 'dummy_disc',
      '--configs', 'debug', '--', '--run.steps', '10'])
  assert [flag(c, '--seed') for c in cmds] == ['0', '1', '2']
  assert all(c[c.index('--configs') + 1:][:2] == [
      'debug', 'disagreement_exp_decay'] for c in cmds)
  assert all(c[-2:] == ['--run.steps', '10'] for c in cmds)
  for name, block in [('run_standard_dreamer', 'uniform'),
                      ('run_replay_buffer_experiment', 'xp_replay'),
                      ('run_latent_disagreement_experiment_ema',
                       'disagreement_slope_ema')]:
    cmds = dry(capsys, ['--study', name, '--root', str(tmp_path / name),
                        '--configs', 'debug'])
    # Seed 0 unless --seeds says otherwise.
    assert [flag(c, '--logdir') for c in cmds] == [
        str(tmp_path / name / block / 'seed0')]
  # --methods replaces the study's blocks; the root has a default.
  args = study.parse(['--study', 'run_standard_dreamer', '--methods',
                      'xp_disagreement_exp_decay'])
  assert args.methods == ['xp_disagreement_exp_decay']
  assert args.root == '~/logdir/experiments/run_standard_dreamer'
  assert args.name == 'run_standard_dreamer' and args.seeds == [0]
  with pytest.raises(SystemExit):
    study.parse(['--study', 'run_nothing'])
  with pytest.raises(SystemExit):
    study.parse(['--study', 'run_standard_dreamer', '--report'])


def test_learning_study_runs_each_block_to_its_budget(tmp_path, capsys):
  cmds = dry(capsys, ['--study', 'learning', '--root', str(tmp_path)])
  got = [(c[c.index('--configs') + 1], flag(c, '--seed'),
          flag(c, '--run.steps'), flag(c, '--logdir')) for c in cmds]
  want = [(name, str(seed), str(spec['steps']),
           str(tmp_path / name / f'seed{seed}'))
          for name, spec in study.SUITE.items() for seed in spec['seeds']]
  assert got == want
  cmds = dry(capsys, ['--study', 'learning', '--root', str(tmp_path),
                      '--methods', 'pendulum', '--seeds', '9', '--',
                      '--jax.platform', 'cpu'])
  assert len(cmds) == 1 and flag(cmds[0], '--seed') == '9'
  assert cmds[0][-4:] == ['--run.steps', '10000', '--jax.platform', 'cpu']
  for argv in (['--methods', 'uniform'], ['--tasks', 'dummy_disc'],
               ['--slurm']):
    with pytest.raises(SystemExit):
      study.parse(['--study', 'learning', '--root', str(tmp_path), *argv])


def test_learning_report(tmp_path, capsys):
  # cartpole seed 5: episodes ending every 1000 env steps with scores 100,
  # 200, ..., 1000, then six of 0; seed 6 never reaches 400; seed 7 not run;
  # seed 8 still running at 5,000.
  for seed, ys in ((5, [100 * i for i in range(1, 11)] + [0] * 6),
                   (6, [50] * 15), (8, [30] * 5)):
    logdir = tmp_path / 'cartpole' / f'seed{seed}'
    logdir.mkdir(parents=True)
    (logdir / 'config.yaml').write_text('task: gym_CartPole-v1\n')
    (logdir / 'scores.jsonl').write_text(''.join(
        json.dumps({'step': 1000 * (i + 1), 'episode/score': y}) + '\n'
        for i, y in enumerate(ys)))
  assert study.main(['--study', 'learning', '--root', str(tmp_path),
                     '--methods', 'cartpole', '--seeds', '5', '6', '7', '8',
                     '--report']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[:3] == [
      '## cartpole', '| run | env steps | @4,000 | @8,000 | @14,000 | '
      'min after 400 |', '| --- | --- | --- | --- | --- | --- |']
  # @4k: mean of 100..400; @8k: of 100..800; @14k: of the last 10 by then
  # (500..1000 and four 0). The running last-10 mean first reaches 400 at
  # the 7th episode and is lowest at the end (700..1000 and six 0: 340).
  assert lines[3] == '| seed 5 | 16,000 | 250.0 | 450.0 | 450.0 | 340.0 |'
  assert lines[4] == ('| seed 6 | 15,000 | 50.0 | 50.0 | 50.0 | never '
                      'reached |')
  assert lines[5] == '| seed 7 | not run |'
  # Marks past its last step have no value yet.
  assert lines[6] == '| seed 8 | 5,000 | 30.0 | - | - | never reached |'
  assert not list(tmp_path.glob('*/*/done'))  # --report runs nothing.


def test_scores_reads_task_method_seed_layout(tmp_path, capsys):
  root = tmp_path / 'xp'
  for task in ('dummy_disc', 'dummy_cont'):
    for method, base in (('uniform', 1.0), ('disagreement_exp_decay', 2.0)):
      for seed in (0, 1):
        logdir = root / task / method / f'seed{seed}'
        logdir.mkdir(parents=True)
        (logdir / 'config.yaml').write_text(f'task: {task}\nseed: {seed}\n')
        lines = [{'step': 10 * i, 'episode/score': base + seed}
                 for i in range(5)]
        (logdir / 'scores.jsonl').write_text(
            ''.join(json.dumps(l) + '\n' for l in lines))
  (root / 'experiment.json').write_text(json.dumps(
      {'name': 'XP', 'description': 'layout test'}))
  assert scores.main([str(root), '--json']) == 0
  result = json.loads(capsys.readouterr().out)
  rows = {(r['task'], r['method']): r for r in result['rows']}
  assert set(rows) == {(t, m) for t in ('dummy_disc', 'dummy_cont')
                       for m in ('uniform', 'disagreement_exp_decay')}
  assert rows[('dummy_cont', 'disagreement_exp_decay')]['seeds'] == [0, 1]
  assert result['experiments'][0]['name'] == 'XP'
  assert scores.main([str(root)]) == 0
  assert 'Experiment: XP - layout test' in capsys.readouterr().out
