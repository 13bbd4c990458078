"""Dockerfile, compose.yaml, scripts/docker.sh and .dockerignore, checked
without a Docker engine. The Dockerfile is read as Docker reads it (comment
lines, continuations, exec form, ARG/ENV substitution) and its RUN steps run
under /bin/sh as Docker runs them, but with stand-in executables (useradd,
chown, pip, ...) that record their arguments; scripts/docker.sh runs with a
stand-in `docker`; .dockerignore is matched with Docker's rules. With a
Docker daemon (and --slow) the image is built and runs a short debug job."""

import json
import os
import pathlib
import posixpath
import pty
import re
import shutil
import subprocess
import sys
import tomllib
import types

import pytest
import ruamel.yaml as yaml

from dreamerv3 import main as dmain

ROOT = pathlib.Path(__file__).resolve().parent.parent


# Reading a Dockerfile.

VAR = re.compile(r'\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))')


def expand(match, env):
  """$NAME, ${NAME}, ${NAME:-word} (word if unset or empty), ${NAME:+word}
  (word if set and not empty)."""
  name = match.group(1) or match.group(4)
  value, op, word = env.get(name, ''), match.group(2), match.group(3)
  if op == '-':
    return value or word
  if op == '+':
    return word if value else ''
  return value


def words(text, env):
  """Docker's word splitting: unquoted whitespace separates words, quotes
  are removed, variables expand outside single quotes, a backslash escapes
  the next character."""
  out, word, quote, started, i = [], '', None, False, 0
  while i < len(text):
    ch = text[i]
    if quote != "'" and ch == '\\' and i + 1 < len(text):
      word, started, i = word + text[i + 1], True, i + 2
      continue
    if quote != "'" and ch == '$' and VAR.match(text, i):
      match = VAR.match(text, i)
      word, started, i = word + expand(match, env), True, match.end()
      continue
    if quote:
      quote = None if ch == quote else quote
      word += '' if quote is None else ch
    elif ch in '"\'':
      quote, started = ch, True
    elif ch.isspace():
      if started:
        out.append(word)
      word, started = '', False
    else:
      word, started = word + ch, True
    i += 1
  assert quote is None, f'unclosed quote in {text!r}'
  return out + [word] if started else out


def instructions(text):
  """(KEYWORD, argument text) per instruction. Comment lines are dropped
  also inside a continued instruction, empty lines are skipped, and a
  backslash ending a line (trailing blanks allowed) joins the next line
  to it with the newline removed."""
  steps, current = [], None
  for line in text.splitlines():
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    current = (current or '') + line
    if re.search(r'\\[ \t]*$', current):
      current = re.sub(r'\\[ \t]*$', '', current)
      continue
    keyword, args = (current.strip().split(None, 1) + [''])[:2]
    steps.append((keyword.upper(), args.strip()))
    current = None
  assert current is None, 'the last instruction ends in a backslash'
  return steps


def exec_form(args):
  """The JSON array of an exec-form argument, or None (shell form)."""
  try:
    value = json.loads(args)
  except ValueError:
    return None
  return value if isinstance(value, list) and all(
      isinstance(v, str) for v in value) else None


def evaluate(text, build_args=None):
  """The image the instructions describe for these --build-arg values:
  base, env, user, workdir, entrypoint, cmd, volumes and the steps that
  act (RUN, COPY, VOLUME) with the user, workdir and variables in force at
  each of them."""
  build_args = dict(build_args or {})
  image = types.SimpleNamespace(
      base=None, args={}, env={}, user='root', workdir='/', entrypoint=None,
      cmd=None, volumes=[], steps=[], unused=set(build_args))
  for index, (keyword, args) in enumerate(instructions(text)):
    scope = {**image.args, **image.env}
    step = types.SimpleNamespace(
        index=index, keyword=keyword, args=args, user=image.user,
        workdir=image.workdir, env=scope)
    if keyword == 'FROM':
      assert image.base is None, 'one stage'
      image.base = words(args, scope)[0]
    elif keyword == 'ARG':
      for word in words(args, scope):
        name, eq, default = word.partition('=')
        image.unused.discard(name)
        if name in build_args:
          image.args[name] = build_args[name]
        elif eq:
          image.args[name] = default
    elif keyword == 'ENV':
      tokens = words(args, scope)
      if '=' not in tokens[0]:  # Legacy form: ENV NAME value with blanks.
        pairs = [(tokens[0], ' '.join(tokens[1:]))]
      else:
        pairs = [t.split('=', 1) for t in tokens]
      image.env.update(pairs)
    elif keyword == 'WORKDIR':
      image.workdir = posixpath.join(image.workdir, words(args, scope)[0])
    elif keyword == 'USER':
      image.user = words(args, scope)[0]
    elif keyword in ('COPY', 'ADD'):
      tokens = words(args, scope)
      step.flags = [t for t in tokens if t.startswith('--')]
      *step.sources, dest = [t for t in tokens if not t.startswith('--')]
      step.dest = posixpath.normpath(posixpath.join(image.workdir, dest))
      step.into = dest.endswith('/') or len(step.sources) > 1  # A folder.
      image.steps.append(step)
    elif keyword == 'RUN':
      step.command = exec_form(args) or ['/bin/sh', '-c', args]
      image.steps.append(step)
    elif keyword in ('ENTRYPOINT', 'CMD'):
      value = exec_form(args) or ['/bin/sh', '-c', args]
      setattr(image, keyword.lower(), value)
    elif keyword == 'VOLUME':
      step.paths = exec_form(args) or words(args, scope)
      image.volumes += step.paths
      image.steps.append(step)
    else:
      raise AssertionError(f'unexpected instruction {keyword}')
  return image


def dockerfile(**build_args):
  return evaluate((ROOT / 'Dockerfile').read_text(), build_args)


def container_argv(image, run_args=()):
  """What the container executes for `docker run IMAGE [ARGS]`: ARGS
  replace CMD and follow an exec-form ENTRYPOINT."""
  return image.entrypoint + (list(run_args) or image.cmd)


# Stand-in executables.

FAKE = f'''#!{sys.executable}
import json, os, sys
name, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
record = {{'name': name, 'argv': argv, 'cwd': os.getcwd(),
          'step': os.environ.get('FAKE_STEP')}}
if name == 'pip' and '-r' in argv:
  with open(argv[argv.index('-r') + 1]) as f:
    record['requirements'] = f.read()
with open(os.environ['FAKE_LOG'], 'a') as f:
  f.write(json.dumps(record) + '\\n')
if name == 'id':
  print(os.environ['FAKE_UID' if '-u' in argv else 'FAKE_GID'])
if name == 'getent':
  sys.exit(int(os.environ['FAKE_GETENT']))
'''


def sandbox(tmp_path, fakes, real):
  """A PATH with only the stand-ins and the named real tools: a command
  that neither covers is not found, so nothing else runs for real."""
  bin_ = tmp_path / 'bin'
  bin_.mkdir(parents=True)
  fake = tmp_path / 'fake.py'
  fake.write_text(FAKE)
  fake.chmod(0o755)
  for name in fakes:
    (bin_ / name).symlink_to(fake)
  for name in real:
    (bin_ / name).symlink_to(shutil.which(name))
  return {'PATH': str(bin_), 'FAKE_LOG': str(tmp_path / 'log.jsonl')}


def calls(env):
  path = env['FAKE_LOG']
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


# The image's /bin/sh (Debian's dash). Under bash, $UID would be the shell's
# own read-only variable, not the build argument.
SH = shutil.which('dash') or '/bin/sh'
BUILD_FAKES = ('getent', 'groupadd', 'useradd', 'mkdir', 'chown', 'apt-get',
               'rm', 'pip')


def build(tmp_path, getent=0, **build_args):
  """Runs the Dockerfile's RUN steps in order under /bin/sh -c, as root in a
  stand-in of the image's file system (COPY copies files from the
  repository into it); returns the image and the recorded calls."""
  image = dockerfile(**build_args)
  env = sandbox(tmp_path, BUILD_FAKES, ['sed'])
  root = tmp_path / 'fs'
  for step in image.steps:
    local = root / step.workdir.lstrip('/')
    local.mkdir(parents=True, exist_ok=True)
    if step.keyword == 'COPY':
      assert not any(dockerignored(s) for s in step.sources if s != '.')
      dest = root / step.dest.lstrip('/')
      for source in step.sources if step.sources != ['.'] else []:
        shutil.copy(ROOT / source, dest / source if step.into else dest)
    if step.keyword == 'RUN':
      command = step.command
      if command[:2] == ['/bin/sh', '-c']:
        command = [SH, *command[1:]]
      proc = subprocess.run(
          command, cwd=local, capture_output=True, text=True, env={
              **step.env, **env, 'FAKE_STEP': str(step.index),
              'FAKE_GETENT': str(getent)})
      assert proc.returncode == 0, (step.args, proc.stderr)
  return image, calls(env)


def test_reader_follows_docker_syntax():
  text = '\n'.join([
      '# A comment line.', 'FROM base:1', 'ARG A=1', 'ARG B', 'ARG C=x',
      'ENV P=/opt/$A Q="two words" \\', '    # A comment inside.', '',
      '    R=${B:-fallback} S=${A:+set}${B:+unset} T=\'$A\'',
      'ENV OLD legacy value', 'WORKDIR /w', 'WORKDIR sub',
      'RUN echo "$A" && \\  ', '    echo b', 'CMD ["python", "x y"]',
      'ENTRYPOINT run it'])
  image = evaluate(text, {'C': 'given', 'Z': 'undeclared'})
  assert image.base == 'base:1' and image.args == {'A': '1', 'C': 'given'}
  assert image.env == {'P': '/opt/1', 'Q': 'two words', 'R': 'fallback',
                       'S': 'set', 'T': '$A', 'OLD': 'legacy value'}
  assert image.workdir == '/w/sub' and image.unused == {'Z'}
  [run] = image.steps
  assert run.command == ['/bin/sh', '-c', 'echo "$A" &&     echo b']
  assert run.env['A'] == '1' and run.workdir == '/w/sub'
  assert image.cmd == ['python', 'x y']
  assert image.entrypoint == ['/bin/sh', '-c', 'run it']  # Shell form.


def test_base_image_meets_requires_python():
  base = dockerfile().base
  name, tag = base.split(':')
  assert name == 'python' and tag.endswith('-slim'), base
  need = tomllib.loads((ROOT / 'pyproject.toml').read_text())[
      'project']['requires-python']
  assert need.startswith('>=')
  version = lambda s: tuple(int(x) for x in s.split('.'))
  assert version(tag[:-len('-slim')]) >= version(need[2:])


@pytest.mark.parametrize('uid,gid,group_exists', [
    (None, None, False), ('1234', '5678', False), ('501', '20', True)])
def test_build_creates_the_user_that_owns_the_volumes(
    tmp_path, uid, gid, group_exists):
  """The RUN steps, run as root before USER, create the run user with the
  UID/GID build args (default 1000; the group is created only if missing)
  and hand it /logdir and the cache before VOLUME declares them (later
  changes to a volume path are discarded); the run user is that user, and
  the paths main.py writes by default are its own."""
  args = {'UID': uid, 'GID': gid} if uid else {}
  image, log = build(tmp_path, getent=0 if group_exists else 2, **args)
  uid, gid = uid or '1000', gid or '1000'
  runs = [s for s in image.steps if s.keyword == 'RUN']
  assert runs and all(s.user == 'root' for s in runs)
  [useradd] = [c['argv'] for c in log if c['name'] == 'useradd']
  assert useradd[-1] == image.user != 'root'
  flag = lambda argv, name: argv[argv.index(name) + 1]
  assert flag(useradd, '--uid') == uid and flag(useradd, '--gid') == gid
  assert '--create-home' in useradd and '--home-dir' not in useradd
  home = '/home/' + image.user
  groupadd = [c['argv'] for c in log if c['name'] == 'groupadd']
  assert groupadd == ([] if group_exists else [['--gid', gid, image.user]])
  # Owned by the user: made and chowned before the VOLUME step.
  [volume] = [s for s in image.steps if s.keyword == 'VOLUME']
  assert image.volumes == ['/logdir']
  made, owned = set(), set()
  for call in log:
    assert int(call['step']) < volume.index, call
    if call['name'] == 'mkdir':
      made |= {a for a in call['argv'] if a.startswith('/')}
    if call['name'] == 'chown':
      assert call['argv'][0] == f'{uid}:{gid}'
      owned |= set(call['argv'][1:])
  assert set(image.volumes) | {home + '/.cache'} <= made & owned
  # main.py's default JAX cache lies under the owned cache directory.
  cache = dmain.parse([]).jax.cache_dir
  assert cache.startswith('~/') and posixpath.commonpath(
      [home + cache[1:], home + '/.cache']) == home + '/.cache'
  # The code is copied as root (no --chown) and so stays read-only to it.
  copies = [s for s in image.steps if s.keyword == 'COPY']
  assert copies and not any(s.flags for s in copies)


def pins(path):
  lines = [l.strip() for l in path.read_text().splitlines()]
  lines = [l for l in lines if l and not l.startswith('#')]
  return dict(re.fullmatch(r'([\w.\-\[\]]+)==(\S+)', l).groups()
              for l in lines)


@pytest.mark.parametrize('build_args', [
    {}, {'JAX_EXTRA': 'cuda12'}, {'ENVS': '1'}])
def test_build_installs_exactly_the_pinned_requirements(tmp_path, build_args):
  """pip installs requirements.txt as copied into the image (every line an
  exact pin) and nothing else; JAX_EXTRA=cuda12 adds jax[cuda12] at the
  pinned jax version; ENVS=1 adds requirements-envs.txt and libegl1 for
  MuJoCo's EGL rendering."""
  image, log = build(tmp_path, **build_args)
  want = pins(ROOT / 'requirements.txt')
  assert want['jax'] == want['jaxlib']  # jax[cuda12] needs the same jaxlib.
  pip = [c for c in log if c['name'] == 'pip']
  assert pip[0]['argv'] == ['install', '-r', 'requirements.txt']
  assert pip[0]['requirements'] == (ROOT / 'requirements.txt').read_text()
  expected = [['install', '-r', 'requirements.txt']]
  apt = [c['argv'] for c in log if c['name'] == 'apt-get']
  if build_args.get('ENVS'):
    pins(ROOT / 'requirements-envs.txt')  # Exact pins there too.
    assert pip[1]['requirements'] == (
        ROOT / 'requirements-envs.txt').read_text()
    expected.append(['install', '-r', 'requirements-envs.txt'])
    assert apt == [['update'], ['install', '-y', '--no-install-recommends',
                                'libegl1']]
    assert image.env['MUJOCO_GL'] == 'egl'
  else:
    assert apt == []
  if build_args.get('JAX_EXTRA'):
    expected.append(['install', f'jax[cuda12]=={want["jax"]}'])
  assert [c['argv'] for c in pip] == expected
  assert not image.unused  # Every build arg given is declared.


def test_entrypoint_runs_main_with_the_arguments(tmp_path):
  """`docker run IMAGE ARGS` runs WORKDIR/dreamerv3/main.py (copied from
  the build context) with ARGS; without ARGS the default CMD is a valid
  config that logs to the volume."""
  image = dockerfile()
  assert image.entrypoint[:2] == ['python', 'dreamerv3/main.py']
  copy = [s for s in image.steps if s.keyword == 'COPY'][-1]
  assert copy.sources == ['.'] and copy.dest == image.workdir
  assert not dockerignored('dreamerv3/main.py')
  # The code as COPY puts it in WORKDIR, run with the image's arguments.
  argv = container_argv(image, ['--configs', 'debug', 'no_such_block'])
  proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "'no_such_block'" in proc.stderr, (
      proc.stderr[-2000:])
  config = dmain.parse(image.cmd)
  dmain.check_values(config)
  assert any(posixpath.commonpath([config.logdir, v]) == v
             for v in image.volumes), config.logdir


def dockerignored(path):
  """Docker's .dockerignore rules: patterns (cleaned, leading / dropped)
  match the path or one of its parent directories, * and ? stay within a
  path element, ** spans elements, the last matching line wins and !
  re-includes."""
  result = False
  for line in (ROOT / '.dockerignore').read_text().splitlines():
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    negate = line.startswith('!')
    pattern = posixpath.normpath(line.lstrip('!').strip()).lstrip('/')
    regex, i = '', 0
    while i < len(pattern):
      if pattern.startswith('**/', i):
        regex, i = regex + '(.*/)?', i + 3
      elif pattern.startswith('**', i):
        regex, i = regex + '.*', i + 2
      elif pattern[i] == '*':
        regex, i = regex + '[^/]*', i + 1
      elif pattern[i] == '?':
        regex, i = regex + '[^/]', i + 1
      else:
        regex, i = regex + re.escape(pattern[i]), i + 1
    parts = path.split('/')
    prefixes = ['/'.join(parts[:n]) for n in range(1, len(parts) + 1)]
    if any(re.fullmatch(regex, p) for p in prefixes):
      result = not negate
  return result


def test_dockerignore_keeps_logs_and_caches_out_of_the_context():
  for path in ('logdir', 'logdir/run/ckpt/latest', '.git/HEAD',
               '__pycache__/x.pyc', 'dreamerv3/__pycache__/main.pyc',
               'embodied/jax/nets.pyc', '.pytest_cache/v/cache'):
    assert dockerignored(path), path
  # The project's files all go into the image (COPY . .).
  sources = []
  for folder, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in (
        '.git', 'logdir', '__pycache__', '.pytest_cache')]
    sources += [os.path.relpath(os.path.join(folder, f), ROOT)
                for f in files if not f.endswith('.pyc')]
  for path in ('dreamerv3/main.py', 'configs.yaml', 'requirements.txt',
               'embodied/jax/nets.py'):
    assert path in sources
  assert [p for p in sources if dockerignored(p)] == []


def compose():
  return yaml.YAML(typ='safe').load((ROOT / 'compose.yaml').read_text())


def test_compose_builds_and_mounts_like_the_script(tmp_path):
  services = compose()['services']
  image = dockerfile()
  for name, service in services.items():
    assert service['build']['context'] == '.'
    assert service.get('init') is True  # Signals reach main.py.
    # As long as docker.sh waits: main.py checkpoints before it exits.
    assert service['stop_grace_period'] == '60s'
    mounts = dict(v.split(':') for v in service['volumes'])
    assert mounts['./logdir'] == '/logdir' and '/logdir' in image.volumes
    named = [s for s in mounts if not s.startswith(('.', '/'))]
    assert [mounts[s] for s in named] == ['/home/dreamer/.cache']
    assert set(named) <= set(compose()['volumes'])
    # Compose substitutes ${NAME:-default} from the environment.
    for env, ids in [({}, ('1000', '1000')),
                     ({'DREAMER_UID': '1234', 'DREAMER_GID': '20'},
                      ('1234', '20'))]:
      args = {k: ' '.join(words(str(v), env))
              for k, v in service['build']['args'].items()}
      assert (args['UID'], args['GID']) == ids
      assert not dockerfile(**args).unused, name
  gpu = services['dreamer-gpu']
  assert gpu['build']['args']['JAX_EXTRA'] == 'cuda12'
  assert 'JAX_EXTRA' not in services['dreamer']['build']['args']
  devices = gpu['deploy']['resources']['reservations']['devices']
  assert devices == [{'driver': 'nvidia', 'count': 'all',
                      'capabilities': ['gpu']}]
  assert 'deploy' not in services['dreamer']
  # The GPU service's build installs the CUDA jax.
  args = {k: ' '.join(words(str(v), {}))
          for k, v in gpu['build']['args'].items()}
  _, log = build(tmp_path, **args)
  want = pins(ROOT / 'requirements.txt')['jax']
  assert ['install', f'jax[cuda12]=={want}'] in [
      c['argv'] for c in log if c['name'] == 'pip']


# scripts/docker.sh with a stand-in docker.

RUN_VALUES = {'-v', '--stop-timeout', '--gpus'}
RUN_FLAGS = {'--rm', '--init', '-it'}


def docker_script(tmp_path, uid='1234', gid='5678', tty=False, **env):
  """Runs a copy of scripts/docker.sh (it works in its parent directory)
  with `docker`, `id` and `chown` recorded; returns the directory and the
  build and run calls as dicts."""
  repo = tmp_path / 'repo'
  (repo / 'scripts').mkdir(parents=True)
  script = repo / 'scripts' / 'docker.sh'
  shutil.copy2(ROOT / 'scripts' / 'docker.sh', script)
  assert os.access(script, os.X_OK)
  box = sandbox(tmp_path, ['docker', 'id', 'chown'],
                ['bash', 'dirname', 'mkdir'])
  stdin = subprocess.DEVNULL
  if tty:
    leader, stdin = pty.openpty()
  args = ['--configs', 'cartpole', '--logdir', '/logdir/a b', '$HOME', '*']
  try:
    proc = subprocess.run(
        [str(script), *args], cwd=tmp_path, stdin=stdin, capture_output=True,
        text=True, timeout=60,
        env={**box, 'FAKE_UID': uid, 'FAKE_GID': gid, **env})
  finally:
    if tty:
      os.close(leader)
      os.close(stdin)
  assert proc.returncode == 0, proc.stderr
  log = calls(box)
  docker = [c for c in log if c['name'] == 'docker']
  assert [c['argv'][0] for c in docker] == ['build', 'run']
  assert all(c['cwd'] == os.path.realpath(repo) for c in docker)
  argv = docker[0]['argv'][1:]
  built = {'context': argv[-1], 'args': {}, 'tag': None}
  for i in range(0, len(argv) - 1, 2):
    if argv[i] == '--build-arg':
      key, value = argv[i + 1].split('=', 1)
      built['args'][key] = value
    else:
      assert argv[i] == '-t', argv
      built['tag'] = argv[i + 1]
  argv = docker[1]['argv'][1:]
  ran = {'flags': set(), 'volumes': {}, 'values': {}}
  i = 0
  while argv[i].startswith('-'):
    if argv[i] in RUN_FLAGS:
      ran['flags'].add(argv[i])
      i += 1
      continue
    assert argv[i] in RUN_VALUES, argv[i]
    if argv[i] == '-v':
      source, target = argv[i + 1].split(':')
      ran['volumes'][source] = target
    else:
      ran['values'][argv[i]] = argv[i + 1]
    i += 2
  ran['image'], ran['args'] = argv[i], argv[i + 1:]
  assert ran['args'] == args  # Passed through unchanged.
  chown = [c['argv'] for c in log if c['name'] == 'chown']
  return repo, built, ran, chown


@pytest.mark.parametrize('extra', ['', 'cuda12'])
def test_docker_script_builds_for_the_caller_and_mounts_logdir(
    tmp_path, extra):
  repo, built, ran, chown = docker_script(tmp_path, JAX_EXTRA=extra)
  kind = extra or 'cpu'
  assert built['context'] == '.' and built['tag'] == f'dreamer:{kind}'
  assert built['args'] == {'JAX_EXTRA': extra, 'ENVS': '', 'UID': '1234',
                           'GID': '5678'}
  assert ran['image'] == built['tag']
  assert ran['flags'] == {'--rm', '--init'}  # No terminal on stdin.
  assert ran['values'] == {'--stop-timeout': '60', **(
      {'--gpus': 'all'} if extra else {})}
  assert (repo / 'logdir').is_dir() and chown == []
  image = dockerfile(**built['args'])
  assert not image.unused  # Every build arg is declared.
  assert ran['volumes'] == {str(repo / 'logdir'): image.volumes[0],
                            f'dreamer-jax-cache-{kind}': '/home/dreamer/.cache'}
  # The image it builds runs as the caller's ids and installs the CUDA jax
  # for the GPU.
  _, log = build(tmp_path / 'build', **built['args'])
  [useradd] = [c['argv'] for c in log if c['name'] == 'useradd']
  assert useradd[useradd.index('--uid') + 1] == '1234'
  cuda = [c for c in log if c['name'] == 'pip' and 'jax[cuda12]' in
          ' '.join(c['argv'])]
  assert bool(cuda) == bool(extra)


def test_docker_script_as_root_and_on_a_terminal(tmp_path):
  """Root on the host builds for uid 1000 (the image never runs as root)
  and hands it ./logdir; with a terminal on stdin the run is interactive;
  ENVS passes through."""
  repo, built, ran, chown = docker_script(
      tmp_path, uid='0', gid='0', tty=True, ENVS='1')
  assert (built['args']['UID'], built['args']['GID']) == ('1000', '1000')
  assert built['args']['ENVS'] == '1'
  assert chown == [['1000:1000', 'logdir']]
  assert ran['flags'] == {'--rm', '--init', '-it'}


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
