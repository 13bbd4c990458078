"""The packages a GPU machine without a package registry lacks for the GPU
check's learning stage, carried in .gpu/site/ and installed there.

The machine has Python 3.12, jax (CUDA), optax, numpy, scipy (a jax
dependency), pillow, matplotlib, pytest, cloudpickle, msgpack and psutil.
It lacks our pure-Python dependencies (gymnasium too: the config checks
import every env suite's module, embodied/envs/gym.py among them; not
ale-py, which no stage imports now) and the DeepMind Control chain:
dm_control imports mujoco, lxml, dm_env, absl and typing_extensions for
`suite.load` (proprio only; MUJOCO_GL=disable skips every GL import). A
device call carries 64 MiB in all, and dm_control's wheel alone is 56 MB,
so three distributions travel trimmed to what the control suite imports
and loads:
- dm_control: the package's __init__, _render (constants only are used),
  mujoco, rl, suite and utils; not locomotion, manipulation, composer,
  mjcf, the viewer, the dog's 20 MB of meshes (dmc_dog_* will not load),
  demos or tests.
- mujoco: not the experimental studio (15 MB compressed), the filament
  renderer, the simulate viewer, the C headers, test data or tests.
- lxml: not objectify, html, isoschematron, the C headers and Cython
  sources.
Every archive in .gpu/site/ (a wheel, or a trimmed copy of one: the same
site-packages layout, zipped) is installed by extracting it into a private
folder on PYTHONPATH when any of its top-level modules is missing there.
"""

import fnmatch
import importlib.util
import pathlib
import shutil
import subprocess
import sys
import zipfile

# Whole wheels (pure Python, small).
PURE = ('ninjax==3.6.3', 'elements==3.22.4', 'portal==3.8.3',
        'ruamel.yaml==0.19.1', 'gymnasium==1.4.0',
        'farama-notifications==0.0.4', 'dm-env==1.6', 'absl-py==2.5.1',
        'typing-extensions==4.16.0')
# Trimmed: distribution -> (what to keep, what to drop inside it), as
# patterns over the paths in the wheel; dist-info folders are kept.
TRIMMED = {
    'dm-control==1.0.50': (
        ('dm_control/__init__.py', 'dm_control/_render/*',
         'dm_control/mujoco/*', 'dm_control/rl/*', 'dm_control/suite/*',
         'dm_control/utils/*'),
        ('dm_control/suite/dog_assets/*', 'dm_control/suite/all_domains.png',
         'dm_control/suite/demos/*', 'dm_control/mujoco/testing/*')),
    'mujoco==3.17.0': (
        ('mujoco/*',),
        ('mujoco/experimental/*', 'mujoco/include/*', 'mujoco/testdata/*',
         'mujoco/usd/*', 'mujoco/sysid/*', 'mujoco/rendering/filament/*',
         'mujoco/_render_filament*', 'mujoco/_simulate*', 'mujoco/viewer.py',
         'mujoco/mjrf.py')),
    'lxml==6.2.1': (
        ('lxml/*',),
        ('lxml/objectify*', 'lxml/html/*', 'lxml/isoschematron/*',
         'lxml/includes/*', '*.pyx', '*.pxi', '*.pxd', '*.h')),
}
# Everywhere: tests and caches.
DROP = ('*_test.py', '*/__pycache__/*', '*.pyc')
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64',
             'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64')
PYTHON = '3.12'
# What dm_control needs that the GPU machine has already.
PRESENT = ('numpy', 'scipy')


def project(requirement):
  """'dm-control==1.0.50' -> 'dm_control', the wheel's name prefix."""
  return requirement.split('==')[0].replace('-', '_').replace('.', '_')


def keep(requirement, path):
  """Whether the trimmed copy of a distribution keeps this wheel path."""
  if any(fnmatch.fnmatch(path, p) for p in DROP):
    return False
  top = path.split('/', 1)[0]
  if top.endswith('.dist-info'):
    return True
  if top.endswith('.data'):  # Scripts and headers: not imported.
    return False
  wanted, dropped = TRIMMED[requirement]
  return (any(fnmatch.fnmatch(path, p) for p in wanted)
          and not any(fnmatch.fnmatch(path, p) for p in dropped))


def download(cache):
  """The wheels of PURE and TRIMMED for the GPU machine's Python, into
  cache (pip skips what is there); {requirement: wheel path}."""
  cache = pathlib.Path(cache)
  cache.mkdir(parents=True, exist_ok=True)
  requirements = list(PURE) + list(TRIMMED)
  cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps',
         '--only-binary=:all:', '--python-version', PYTHON,
         '--implementation', 'cp', '-d', str(cache)]
  for platform in PLATFORMS:
    cmd += ['--platform', platform]
  subprocess.run(cmd + requirements, check=True)
  found = {}
  for requirement in requirements:
    name, version = requirement.split('==')
    prefix = f'{project(requirement)}-{version}-'.lower()
    wheels = [w for w in cache.glob('*.whl')
              if w.name.lower().replace('.', '_').startswith(
                  prefix.replace('.', '_'))]
    if not wheels:
      raise FileNotFoundError(f'no wheel of {requirement} in {cache}')
    found[requirement] = max(wheels, key=lambda w: w.stat().st_mtime)
  return found


def trim(requirement, wheel, dest):
  """A zip of the wheel's paths that keep() keeps; returns its path."""
  dest = pathlib.Path(dest) / (wheel.name[:-len('.whl')] + '.trimmed.zip')
  with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(
      dest, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as out:
    for info in src.infolist():
      if not info.is_dir() and keep(requirement, info.filename):
        out.writestr(info.filename, src.read(info))
  return dest


def build(site, cache):
  """.gpu/site/: the pure wheels as they are, the others trimmed; returns
  [(archive, wheel size, archive size)]."""
  site = pathlib.Path(site)
  if site.exists():
    shutil.rmtree(site)
  site.mkdir(parents=True)
  rows = []
  for requirement, wheel in download(cache).items():
    if requirement in TRIMMED:
      archive = trim(requirement, wheel, site)
    else:
      archive = pathlib.Path(shutil.copy(wheel, site))
    rows.append((archive, wheel.stat().st_size, archive.stat().st_size))
  return rows


def modules(names):
  """The importable top-level modules of an archive's paths: packages
  (namespace packages by their first regular subpackage) and modules."""
  names = set(names)
  found = set()
  for name in names:
    parts = name.split('/')
    top = parts[0]
    if top.endswith(('.dist-info', '.data')):
      continue
    if len(parts) == 1:
      if top.endswith('.py') or '.cpython-' in top:
        found.add(top.split('.', 1)[0])
    elif f'{top}/__init__.py' in names:
      found.add(top)
    elif len(parts) > 2 and f'{top}/{parts[1]}/__init__.py' in names:
      found.add(f'{top}.{parts[1]}')
  return sorted(found)


def python_tag(archive):
  """'cp312' for an archive of compiled code, None for pure Python."""
  for part in pathlib.Path(archive).name.split('-'):
    if part.startswith('cp3'):
      return part
  return None


def absent(name):
  try:  # find_spec of 'a.b' raises when 'a' itself is missing.
    return importlib.util.find_spec(name) is None
  except (ModuleNotFoundError, ValueError):
    return True


def install(site, target):
  """Extracts every archive of `site` one of whose modules is missing into
  target (put it first on sys.path and PYTHONPATH); returns lines saying
  what was installed and what the machine had."""
  archives = sorted(pathlib.Path(site).glob('*.zip')) + sorted(
      pathlib.Path(site).glob('*.whl'))
  if not archives:
    return [f'no carried packages in {site}']
  target = pathlib.Path(target)
  target.mkdir(parents=True, exist_ok=True)
  if str(target) not in sys.path:
    sys.path.insert(0, str(target))
  installed, present = [], []
  for archive in archives:
    with zipfile.ZipFile(archive) as z:
      names = [n for n in z.namelist()
               if not n.split('/', 1)[0].endswith('.data')]
      mods = modules(names)
      if all(not absent(m) for m in mods):
        present += mods
        continue
      z.extractall(target, names)
      installed += mods
  importlib.invalidate_caches()
  size = sum(a.stat().st_size for a in archives) / 2 ** 20
  lines = [f'carried: {len(archives)} archives, {size:.1f} MiB',
           f'installed into {target}: {", ".join(installed) or "none"}',
           f'already here: {", ".join(present) or "none"}']
  lacking = [m for m in PRESENT if absent(m)]
  if lacking:
    lines.append(f'missing and not carried: {", ".join(lacking)} '
                 '(dm_control needs them)')
  return lines


def trim_installed(requirement, target):
  """A trimmed copy of this Python's installed distribution in target, by
  the rules of keep() (a test's stand-in where the carried copy was built
  for another Python); False when it is not installed."""
  from importlib import metadata
  try:
    dist = metadata.distribution(requirement.split('==')[0])
  except metadata.PackageNotFoundError:
    return False
  for file in dist.files or []:
    path = file.as_posix()
    if path.startswith('..') or not keep(requirement, path):
      continue
    dest = pathlib.Path(target) / path
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file.locate(), dest)
  return True
