"""The prepared GPU script: a dry run of every stage on the CPU, so the
command a session with a lent GPU runs as it is never rots."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dreamerv3 import main as dmain  # noqa: E402
from scripts import bench, gpu_check  # noqa: E402


def test_gpu_stages_parse():
  # The GPU sizes are never run here: their flags must still parse.
  name, *argv = gpu_check.GPU['bench']
  assert name == 'train' and gpu_check.CPU['bench'][0] == 'train'
  options, rest = bench.split_args(name, argv)
  assert options['updates'] == 20 and not options['flops']
  config = dmain.parse(rest)
  assert config.agent.dyn.deter == 2048 and config.task == 'atari100k_pong'
  config = dmain.parse(gpu_check.GPU['train'])
  assert config.run.train_ratio == 256 and config.env.size == (64, 64)
  for path in gpu_check.GPU['tests']:
    assert (ROOT / path).exists(), path


def test_gpu_check_dry_run(tmp_path):
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, 'scripts/gpu_check.py', '--cpu', '--out', str(out),
       '--budget', '90'], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = (out / 'summary.md').read_text()
  for section in ('## Versions and devices', '## Train throughput',
                  '## Tests', '## Learning curve'):
    assert section in summary, section
  assert 'jax 0.' in summary and 'devices [' in summary
  # Throughput ran and gave every data path's figure.
  assert '| exit | 0 (' in summary and '| 0 (' in summary.split('| exit |')[1]
  # Both the one-seed and the two-seeds-in-one-program rows ran.
  assert '| seeds | 1 | 2 |' in summary
  for path in ('prefetch_host', 'sync_host', 'prefetch_accelerator',
               'sync_accelerator'):
    assert f'| updates_per_s[{path}] | ' in summary, path
  assert '| recompiles | none |' in summary
  # The tests passed; the run trained, scored and plotted.
  assert ': exit 0 after' in summary.split('## Tests')[1].split('##')[0]
  curve = summary.split('## Learning curve')[1]
  assert 'exit 0 after' in curve and 'atari100k_pong' in curve
  assert (out / 'curve.png').stat().st_size > 1000
  # What comes back from a device call: at most 8 files, no folders.
  files = list(out.iterdir())
  assert len(files) <= 8 and all(f.is_file() for f in files), files
