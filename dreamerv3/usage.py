"""`main.py --help [PREFIX]`: the command line explained from configs.yaml's
own comments, the env suites, the run scripts and the extensions.

Comments are read from the text of configs.yaml: a block's or key's comment
is the run of `#` lines right above it, else the `#` text at the end of its
line. Nothing is imported to describe suites, scripts and extensions (their
module docstrings are parsed), so --help works without optional packages.
"""

import ast
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINE = re.compile(r'^(?P<indent> *)(?P<key>[^\s#:][^:#]*?):(?P<rest>.*)$')


def comments(text):
  """{block name: comment} and {dotted key of defaults: comment}."""
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
    if depth == 0:
      blocks[key] = text_
      path = [key]
      continue
    path = path[:depth] + [key]
    if path[0] == 'defaults' and text_:
      keys['.'.join(path[1:])] = text_
  return blocks, keys


def first_sentence(text):
  # The first paragraph's first period that is not 'e.g.' or 'et al.'.
  text = ' '.join(text.strip().split('\n\n')[0].split())
  match = re.match(r'(.+?(?<!e\.g)(?<!\bal)\.)(?=\s|$)', text)
  return match.group(1) if match else text


def docstring(module):
  """A module's docstring without importing it."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.origin:
    return ''
  tree = ast.parse(pathlib.Path(spec.origin).read_text())
  return ast.get_docstring(tree) or ''


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
  lines += ['', 'Extensions (built in; more with --extensions):']
  for spec in extensions.BUILTIN:
    doc = first_sentence(docstring(spec))
    lines.append(f'  {extensions.short(spec):<10} {doc}')
  lines += ['', 'Keys with their meaning: --help PREFIX (e.g. --help replay, '
            '--help agent.dyn); all keys: --help all.']
  return '\n'.join(lines)


def keys(defaults, text, prefix):
  """The keys under prefix with their default values and comments."""
  _, notes = comments(text)
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
  lines = []
  for key in chosen:
    note, parent = notes.get(key, ''), key
    while not note and '.' in parent:
      parent = parent.rsplit('.', 1)[0]
      note = notes.get(parent, '')
      note = f'(see {parent}) {first_sentence(note)}' if note else ''
    value = flat[key]
    value = ','.join(map(str, value)) if isinstance(value, list) else value
    lines.append(f'--{key} {value}' + (f'\n    {note}' if note else ''))
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
  out = keys(blocks_data['defaults'], text, prefix)
  if out is None:
    return None, (f"--help {prefix}: no config key starts with '{prefix}' "
                  '(try --help all)')
  return out, None
