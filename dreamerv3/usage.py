"""`main.py --help [PREFIX]`: the command line explained from configs.yaml's
own comments, the env suites, the run scripts and the extensions.

Comments are read from the text of configs.yaml and of each extension's
DEFAULTS: a block's or key's comment is the run of `#` lines right above
it, else the `#` text at the end of its line. Nothing is imported to
describe suites, scripts and extensions (their module docstrings, DEFAULTS
and ALIASES are read from their source), so --help works without optional
packages.
"""

import ast
import importlib.util
import os
import pathlib
import re

import ruamel.yaml as yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINE = re.compile(r'^(?P<indent> *)(?P<key>[^\s#:][^:#]*?):(?P<rest>.*)$')


def comments(text, root='defaults'):
  """{block name: comment} and {dotted key under `root`: comment}; with
  root None (an extension's DEFAULTS) every key, top-level ones too."""
  blocks, keys = {}, {}
  above, path = [], []
  for line in text.splitlines():
    stripped = line.strip()
    if stripped.startswith('#'):
      above.append(stripped.lstrip('#').strip())
      continue
    match = LINE.match(line)
    if not match or not stripped:
      above = []
      continue
    depth = len(match['indent']) // 2
    key = match['key'].strip()
    rest = match['rest']
    trailing = rest.split('#', 1)[1].strip() if '#' in rest else ''
    text_ = ' '.join(above) or trailing
    above = []
    path = path[:depth] + [key]
    if depth == 0:
      blocks[key] = text_
    if root is None and text_:
      keys['.'.join(path)] = text_
    elif depth and path[0] == root and text_:
      keys['.'.join(path[1:])] = text_
  return blocks, keys


def first_sentence(text):
  # The first paragraph's first period that is not 'e.g.' or 'et al.'.
  text = ' '.join(text.strip().split('\n\n')[0].split())
  match = re.match(r'(.+?(?<!e\.g)(?<!\bal)\.)(?=\s|$)', text)
  return match.group(1) if match else text


def source(module):
  """The parsed source of a module (import name or .py path), or None."""
  if module.endswith('.py'):
    path = pathlib.Path(os.path.expanduser(module))
  else:
    spec = importlib.util.find_spec(module)
    path = pathlib.Path(spec.origin) if spec and spec.origin else None
  if path is None or not path.is_file():
    return None
  return ast.parse(path.read_text())


def docstring(module):
  """A module's docstring without importing it."""
  tree = source(module)
  return (ast.get_docstring(tree) or '') if tree else ''


def declared(module):
  """An extension module's (DEFAULTS text, ALIASES), read from its source;
  a value that is no literal comes from importing the module."""
  tree = source(module)
  if tree is None:
    raise FileNotFoundError(f'No extension module {module}')
  found = {'DEFAULTS': '', 'ALIASES': {}}
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
        getattr(node.targets[0], 'id', None) in found):
      name = node.targets[0].id
      try:
        found[name] = ast.literal_eval(node.value)
      except ValueError:
        from dreamerv3 import extensions
        found[name] = getattr(extensions.load(module), name)
  return found['DEFAULTS'], found['ALIASES']


def examples(blocks_data):
  """{suite: example tasks} from the tasks the config blocks name."""
  from embodied.envs import SUITES
  out = {suite: [] for suite in SUITES}
  for block in blocks_data.values():
    task = block.get('task') if isinstance(block, dict) else None
    if not task:
      continue
    suite = task.split('_', 1)[0]
    if suite in out and task not in out[suite]:
      out[suite].append(task)
  return out


def overview(blocks_data, text):
  from dreamerv3 import extensions
  from embodied import envs, run
  blocks, _ = comments(text)
  lines = [
      'Usage: python dreamerv3/main.py [--configs BLOCK ...] [--KEY VALUE ...]',
      '',
      'Config blocks (configs.yaml; applied in order over `defaults`):']
  width = max(len(b) for b in blocks)
  for name in blocks:
    if name == 'defaults':
      continue
    note = first_sentence(blocks[name]) or 'sets ' + ', '.join(
        blocks_data.get(name) or {})
    lines.append(f'  {name:<{width}}  {note}')
  lines += ['', 'Env suites (--task SUITE_NAME):']
  for suite, tasks in examples(blocks_data).items():
    doc = first_sentence(docstring(envs.SUITES[suite]))
    lines.append(f'  {suite:<10} {doc}' + (
        f' Presets: {", ".join(tasks[:3])}.' if tasks else ''))
  lines += ['', 'Run scripts (--script):']
  for name in run.SCRIPTS:
    doc = first_sentence(docstring(f'embodied.run.{name}'))
    lines.append(f'  {name:<10} {doc}')
  lines += ['', 'Extensions (built in; more with --extensions; each one\'s '
            'keys: --help NAME):']
  for spec in extensions.BUILTIN:
    doc = first_sentence(docstring(spec))
    lines.append(f'  {extensions.short(spec):<10} {doc}')
  lines += ['', 'Keys with their meaning: --help PREFIX (e.g. --help replay, '
            '--help agent.dyn, --help intrinsic); all keys: --help all.']
  return '\n'.join(lines)


def keys(defaults, notes, prefix, aliases=None):
  """The keys under prefix with their default values and comments, then the
  older names (aliases) that stand for them."""
  flat = {}

  def walk(node, path):
    for key, value in node.items():
      name = f'{path}.{key}' if path else key
      if isinstance(value, dict) and value:
        walk(value, name)
      else:
        flat[name] = value
  walk(defaults, '')
  prefix = '' if prefix == 'all' else prefix
  chosen = [k for k in flat
            if not prefix or k == prefix or k.startswith(prefix + '.')]
  if not chosen:
    return None
  # A sub-tree's own comment (e.g. an extension's namespace) heads its keys.
  lines = [notes[prefix], ''] if notes.get(prefix) and prefix not in flat \
      else []
  for key in chosen:
    note, parent = notes.get(key, ''), key
    while not note and '.' in parent:
      parent = parent.rsplit('.', 1)[0]
      note = notes.get(parent, '')
      note = f'(see {parent}) {first_sentence(note)}' if note else ''
    value = flat[key]
    value = ','.join(map(str, value)) if isinstance(value, list) else value
    lines.append(f'--{key} {value}' + (f'\n    {note}' if note else ''))
  older = [(old, new) for old, new in (aliases or {}).items()
           if any(k == new or k.startswith(new + '.') for k in chosen)]
  if older:
    lines += ['', 'Older names, still accepted (command line, blocks, '
              'logdirs):']
    for old, new in older:
      star = '' if new in flat else '.*'
      lines.append(f'  --{old}{star} = --{new}{star}')
  return '\n'.join(lines)


def render(argv, blocks_data, path=ROOT / 'configs.yaml'):
  """The help text for argv (which holds --help or -h), or an error line
  naming an unknown prefix."""
  text = pathlib.Path(path).read_text()
  flag = next(i for i, a in enumerate(argv) if a in ('--help', '-h'))
  prefix = argv[flag + 1] if flag + 1 < len(argv) and not argv[
      flag + 1].startswith('-') else ''
  if not prefix:
    return overview(blocks_data, text), None
  from dreamerv3 import config, extensions
  defaults = dict(blocks_data['defaults'])
  _, notes = comments(text)
  aliases = {}
  specs = config.extension_specs(argv, blocks_data)
  for spec in extensions.specs({'extensions': specs}):
    try:
      ext_text, ext_aliases = declared(spec)
    except (OSError, SyntaxError) as e:
      return None, f'extensions: cannot read {spec} ({e})'
    defaults.update(yaml.YAML(typ='safe').load(ext_text) or {})
    notes.update(comments(ext_text, root=None)[1])
    aliases.update(ext_aliases)
  out = keys(defaults, notes, prefix, aliases) or keys(
      defaults, notes, config.rename(prefix, aliases), aliases)
  if out is None:
    return None, (f"--help {prefix}: no config key starts with '{prefix}' "
                  '(try --help all)')
  return out, None
