"""Dockerfile, compose.yaml and scripts/docker.sh agree: a non-root user that
owns the /logdir volume, every build argument the scripts pass is declared,
the GPU variant reserves NVIDIA devices and installs the pinned jax. With a
Docker daemon (and --slow) the image is built and runs a short debug job."""

import pathlib
import re
import shutil
import subprocess

import pytest
import ruamel.yaml as yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def instructions(path=ROOT / 'Dockerfile'):
  """(KEYWORD, argument) pairs, continuation lines joined, comments out."""
  out, current = [], ''
  for line in path.read_text().splitlines():
    if not current and (not line.strip() or line.lstrip().startswith('#')):
      continue
    if line.rstrip().endswith('\\'):
      current += line.rstrip()[:-1] + ' '
      continue
    current += line
    keyword, _, argument = current.strip().partition(' ')
    out.append((keyword.upper(), argument.strip()))
    current = ''
  return out


def build_args():
  return {arg.split('=')[0] for kw, arg in instructions() if kw == 'ARG'}


def compose():
  return yaml.YAML(typ='safe').load((ROOT / 'compose.yaml').read_text())


def test_runs_as_created_non_root_user():
  steps = instructions()
  keywords = [kw for kw, _ in steps]
  assert keywords.count('FROM') == 1
  users = [i for i, kw in enumerate(keywords) if kw == 'USER']
  assert users, 'no USER: the container would run as root'
  user = steps[users[-1]][1].split(':')[0]
  assert user not in ('root', '0')
  assert users[-1] < keywords.index('ENTRYPOINT')
  assert not [kw for kw in keywords[users[-1]:] if kw == 'RUN']
  created = [arg for kw, arg in steps[:users[-1]] if kw == 'RUN' and
             re.search(rf'useradd\b.*\b{user}\b', arg)]
  assert created, f'USER {user} is never created'


def test_logdir_volume_owned_by_the_user():
  steps = instructions()
  volumes = [arg for kw, arg in steps if kw == 'VOLUME']
  assert any('/logdir' in v for v in volumes)
  # Created and handed to the user before the volume is declared, so a
  # fresh named volume is writable too.
  setup = ' '.join(arg for kw, arg in steps if kw == 'RUN')
  assert re.search(r'mkdir -p [^&]*/logdir', setup)
  assert re.search(r'chown \S+ [^&]*/logdir', setup)
  cmd = next(arg for kw, arg in steps if kw == 'CMD')
  assert re.search(r'"--logdir", "/logdir/', cmd)


def test_base_image_meets_requires_python():
  base = next(arg for kw, arg in instructions() if kw == 'FROM')
  match = re.fullmatch(r'python:(\d+)\.(\d+)-slim', base)
  assert match, base
  need = re.search(r'requires-python = ">=(\d+)\.(\d+)"',
                   (ROOT / 'pyproject.toml').read_text())
  assert tuple(map(int, match.groups())) >= tuple(map(int, need.groups()))


def test_gpu_build_installs_the_pinned_jax():
  text = (ROOT / 'Dockerfile').read_text()
  command = re.search(r'jax\[\$JAX_EXTRA\]==\$\((.*?)\)"', text).group(1)
  version = subprocess.run(['sh', '-c', command], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
  pins = dict(re.findall(r'^(jax|jaxlib)==(\S+)$',
                         (ROOT / 'requirements.txt').read_text(), re.M))
  assert version == pins['jax'] == pins['jaxlib']


def test_compose_mounts_logdir_and_reserves_gpus():
  services = compose()['services']
  declared = build_args()
  for name, service in services.items():
    assert './logdir:/logdir' in service['volumes'], name
    assert service['build']['context'] == '.'
    assert set(service['build']['args']) <= declared, name
    assert service.get('init') is True  # Signals reach main.py, zombies reaped.
  gpu = services['dreamer-gpu']
  assert gpu['build']['args']['JAX_EXTRA'] == 'cuda12'
  devices = gpu['deploy']['resources']['reservations']['devices']
  assert devices[0]['driver'] == 'nvidia'
  assert 'gpu' in devices[0]['capabilities']
  assert 'deploy' not in services['dreamer']
  # Named volumes used by a service are declared.
  for service in services.values():
    for volume in service['volumes']:
      source = volume.split(':')[0]
      if not source.startswith(('.', '/')):
        assert source in compose()['volumes']


def test_docker_script_passes_declared_args():
  script = (ROOT / 'scripts' / 'docker.sh').read_text()
  subprocess.run(['bash', '-n', str(ROOT / 'scripts' / 'docker.sh')],
                 check=True)
  passed = set(re.findall(r'--build-arg (\w+)=', script))
  assert passed and passed <= build_args()
  assert '-v "$PWD/logdir:/logdir"' in script


def test_dockerignore_keeps_logs_out_of_the_image():
  ignored = (ROOT / '.dockerignore').read_text().split()
  assert 'logdir' in ignored and '.git' in ignored


def docker_daemon():
  if not shutil.which('docker'):
    return False
  return subprocess.run(['docker', 'info'], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_daemon(), reason='no Docker daemon')
def test_image_builds_and_runs(tmp_path):
  subprocess.run(['docker', 'build', '-t', 'dreamer:test', '.'], cwd=ROOT,
                 check=True)
  logdir = tmp_path / 'logdir'
  logdir.mkdir(mode=0o777)
  logdir.chmod(0o777)
  proc = subprocess.run(
      ['docker', 'run', '--rm', '-v', f'{logdir}:/logdir', 'dreamer:test',
       '--configs', 'debug', '--task', 'dummy_vector', '--logdir',
       '/logdir/run', '--run.steps', '40'], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert (logdir / 'run' / 'ckpt' / 'latest').exists()
  user = subprocess.run(
      ['docker', 'run', '--rm', '--entrypoint', 'id', 'dreamer:test', '-u'],
      capture_output=True, text=True, check=True).stdout.strip()
  assert user != '0'
