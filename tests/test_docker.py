"""Dockerfile, compose.yaml and scripts/docker.sh. By default a few static
checks (no Docker needed). With `pytest --docker` (marker docker; needs root,
a Docker daemon and debootstrap) the image is built for real and run: on a
Debian base made by scripts/docker_base.sh and with the requirements from a
wheelhouse made on the host and served over HTTP, so neither Docker Hub nor
the package index has to be reachable from the build. The run is stopped
with `docker stop` while it trains, and the same command resumes it."""

import contextlib
import functools
import hashlib
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib

import pytest
import ruamel.yaml as yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def instructions():
  """(KEYWORD, arguments) of the Dockerfile: comment lines dropped (also
  inside a continued instruction), a trailing backslash joins lines."""
  steps, current = [], ''
  for line in (ROOT / 'Dockerfile').read_text().splitlines():
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    current += line
    if current.rstrip().endswith('\\'):
      current = current.rstrip()[:-1]
      continue
    keyword, args = (current.split(None, 1) + [''])[:2]
    steps.append((keyword.upper(), args.strip()))
    current = ''
  assert not current, 'the last instruction ends in a backslash'
  return steps


def declared_args():
  """Build argument names and defaults (None: no default)."""
  out = {}
  for keyword, args in instructions():
    if keyword == 'ARG':
      name, eq, default = args.partition('=')
      out[name] = default.strip('"') if eq else None
  return out


def test_dockerfile_base_is_a_build_arg_with_the_users_default():
  steps = instructions()
  assert steps[0] == ('ARG', 'BASE=python:3.12-slim')
  assert steps[1] == ('FROM', '${BASE}')
  assert [k for k, _ in steps].count('FROM') == 1
  need = tomllib.loads((ROOT / 'pyproject.toml').read_text())[
      'project']['requires-python']
  version = lambda s: tuple(int(x) for x in s.split('.'))
  tag = declared_args()['BASE'].split(':')[1].removesuffix('-slim')
  assert need.startswith('>=') and version(tag) >= version(need[2:])
  # pip's settings stay unset unless given (an empty PIP_NO_INDEX is not
  # "false" to pip).
  args = declared_args()
  assert all(args[k] is None for k in (
      'PIP_INDEX_URL', 'PIP_NO_INDEX', 'PIP_FIND_LINKS'))
  # Runs main.py as a non-root user, writing to the volume.
  last = {k: a for k, a in steps}
  assert json.loads(last['ENTRYPOINT']) == ['python', 'dreamerv3/main.py']
  assert last['USER'] == 'dreamer' and json.loads(last['VOLUME']) == [
      '/logdir']
  assert [k for k, _ in steps].index('USER') > max(
      i for i, (k, _) in enumerate(steps) if k == 'RUN')
  ignored = (ROOT / '.dockerignore').read_text().split()
  assert {'.git', 'logdir'} <= set(ignored)


def test_compose_passes_declared_build_args():
  services = yaml.YAML(typ='safe').load(
      (ROOT / 'compose.yaml').read_text())['services']
  for service in services.values():
    assert set(service['build']['args']) <= set(declared_args())
    assert './logdir:/logdir' in service['volumes']
    assert service['init'] is True  # SIGTERM reaches main.py.


FAKE_DOCKER = f'''#!{sys.executable}
import json, os, sys
with open(os.environ['DOCKER_LOG'], 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\\n')
'''


@pytest.mark.parametrize('base', ['', 'dreamer-base:bookworm'])
def test_docker_script_builds_and_passes_args_through(tmp_path, base):
  """scripts/docker.sh with a stand-in docker: builds with declared build
  args for a non-root user and runs the image with the arguments as given."""
  repo = tmp_path / 'repo'
  (repo / 'scripts').mkdir(parents=True)
  shutil.copy2(ROOT / 'scripts' / 'docker.sh', repo / 'scripts')
  bin_ = tmp_path / 'bin'
  bin_.mkdir()
  (bin_ / 'docker').write_text(FAKE_DOCKER)
  (bin_ / 'docker').chmod(0o755)
  log = tmp_path / 'docker.jsonl'
  args = ['--configs', 'cartpole', '--logdir', '/logdir/a b', '$HOME', '*']
  env = {**os.environ, 'PATH': f'{bin_}:{os.environ["PATH"]}',
         'DOCKER_LOG': str(log), 'BASE': base, 'JAX_EXTRA': '', 'ENVS': ''}
  proc = subprocess.run(
      [str(repo / 'scripts' / 'docker.sh'), *args], stdin=subprocess.DEVNULL,
      capture_output=True, text=True, env=env, timeout=60)
  assert proc.returncode == 0, proc.stderr
  build, run = [json.loads(line) for line in log.read_text().splitlines()]
  assert build[0] == 'build' and build[-3:] == ['-t', 'dreamer:cpu', '.']
  given = dict(build[i + 1].split('=', 1) for i in range(len(build) - 1)
               if build[i] == '--build-arg')
  assert set(given) <= set(declared_args())
  assert given.get('BASE', '') == base
  uid = os.getuid() or 1000  # Root on the host builds for uid 1000.
  assert given['UID'] == str(uid) and (repo / 'logdir').stat().st_uid == uid
  assert run[0] == 'run' and run[-len(args) - 1:] == ['dreamer:cpu', *args]
  assert f'{repo}/logdir:/logdir' in run and '--init' in run


# Built and run for real (pytest --docker).

BASE = 'dreamer-base:bookworm'
IMAGE = 'dreamer:pytest'
UID = 1000  # The image's user; owns the bind-mounted logdir.
STEPS = 4000
# Fixed, so that an unchanged build finds its pip layer in the cache.
PORT = 48231
WHEELS = pathlib.Path.home() / '.cache' / 'dreamer' / 'docker-wheels'


def docker(*args, check=True, timeout=600):
  proc = subprocess.run(['docker', *args], capture_output=True, text=True,
                        timeout=timeout)
  assert not check or proc.returncode == 0, (
      args, proc.stdout[-3000:] + proc.stderr[-3000:])
  return proc


def wheelhouse():
  """Wheels of requirements.txt for the host's Python, made once per
  version of the file (crafter comes only as a source package)."""
  digest = hashlib.sha256((ROOT / 'requirements.txt').read_bytes())
  folder = WHEELS / f'py{sys.version_info[0]}{sys.version_info[1]}'
  stamp = folder / 'requirements.sha256'
  if stamp.exists() and stamp.read_text() == digest.hexdigest():
    return folder
  folder.mkdir(parents=True, exist_ok=True)
  proc = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '-q', '-r',
       str(ROOT / 'requirements.txt'), '-w', str(folder)],
      capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stamp.write_text(digest.hexdigest())
  return folder


@contextlib.contextmanager
def serve(folder):
  """An HTTP server of the folder on 127.0.0.1 (pip's --find-links reads
  its listing); the build reaches it with --network host."""
  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass
  handler = functools.partial(Quiet, directory=str(folder))
  try:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', PORT), handler)
  except OSError:  # Taken: any port, at the cost of the pip layer's cache.
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}/'
  finally:
    server.shutdown()
    server.server_close()


@pytest.fixture(scope='module')
def image():
  if os.geteuid() != 0 or not shutil.which('debootstrap') or not (
      shutil.which('docker') and docker('info', check=False).returncode == 0):
    pytest.skip('needs root, a running Docker daemon and debootstrap: '
                'apt-get install -y docker.io debootstrap; dockerd &')
  proc = subprocess.run([str(ROOT / 'scripts' / 'docker_base.sh'), BASE],
                        capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  # The wheels are the host's: the base's Python must be the same version.
  version = docker('run', '--rm', BASE, 'python', '-c',
                   'import sys; print(sys.version_info[:2])').stdout.strip()
  assert version == str(sys.version_info[:2]), (
      f'{BASE} has Python {version}, the wheels are for {sys.version}')
  with serve(wheelhouse()) as url:
    docker('build', '--network', 'host', '--build-arg', f'BASE={BASE}',
           '--build-arg', 'PIP_NO_INDEX=1', '--build-arg',
           f'PIP_FIND_LINKS={url}', '--build-arg', f'UID={UID}',
           '--build-arg', f'GID={UID}', '-t', IMAGE, str(ROOT), timeout=1800)
  return IMAGE


def logs(name):
  proc = docker('logs', name)
  return proc.stdout + proc.stderr


def latest(logdir):
  return (logdir / 'run' / 'ckpt' / 'latest').read_text().strip()


@pytest.mark.docker
def test_docker_stop_saves_and_the_same_command_resumes(image, tmp_path):
  """As the image's user into a host logdir it owns: `docker stop` during
  training saves a checkpoint below run.steps and exits with status 3; the
  same command loads it, starts at its step and finishes the run."""
  logdir = tmp_path / 'logdir'
  logdir.mkdir()
  os.chown(logdir, UID, UID)
  name = f'dreamer-pytest-{os.getpid()}'
  cache = f'{name}-cache'  # JAX's compile cache, as scripts/docker.sh keeps.
  command = [
      '--init', '-v', f'{logdir}:/logdir',
      '-v', f'{cache}:/home/dreamer/.cache', image,
      '--configs', 'debug', '--task', 'gym_CartPole-v1',
      '--logdir', '/logdir/run', '--run.steps', str(STEPS),
      '--run.log_every', '1']
  try:
    docker('run', '-d', '--name', name, *command)
    # Training, not compiling: a log line some way past the first updates.
    deadline = time.time() + 900
    while True:
      steps = [int(s.replace(',', '')) for s in re.findall(
          r'train step ([\d,]+)\].*train_ups', logs(name))]
      if steps and steps[-1] >= 200:
        break
      running = docker('inspect', '-f', '{{.State.Running}}', name)
      assert running.stdout.strip() == 'true', logs(name)[-3000:]
      assert time.time() < deadline, logs(name)[-3000:]
      time.sleep(1)
    docker('stop', '-t', '60', name, timeout=120)
    status = int(docker('wait', name).stdout.strip())
    out = logs(name)
    assert status == 3, out[-3000:]
    stopped = int(re.search(
        r'Stopping on SIGTERM at step ([\d,]+)\.', out)[1].replace(',', ''))
    assert steps[-1] <= stopped < STEPS
    assert f'Stopped by SIGTERM at step {stopped:,}; checkpoint saved.' in out
    saved = latest(logdir)
    assert saved.endswith(f'-{stopped:012d}')

    proc = docker('run', '--rm', *command, check=False, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f'Loaded checkpoint: /logdir/run/ckpt/{saved}' in out
    assert f'Start training at step {stopped:,} (until {STEPS:,}).' in out
    assert latest(logdir).endswith(f'-{STEPS:012d}')
    # Written by the image's user, so the host user owns it all.
    for path in logdir.rglob('*'):
      assert path.stat().st_uid == UID, path
  finally:
    docker('rm', '-f', name, check=False)
    docker('volume', 'rm', '-f', cache, check=False)
