"""The floors of the design note: a module imports only from its own floor
or those below (dreamerv3 > embodied.run, embodied.envs > embodied.jax >
embodied.core), and no two modules import each other, directly or around a
loop (imports inside functions count too)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLOORS = {'dreamerv3': 1, 'embodied.run': 2, 'embodied.envs': 2,
          'embodied.jax': 3, 'embodied.core': 4}


def modules():
  out = {}
  for package in ('dreamerv3', 'embodied'):
    for path in (ROOT / package).rglob('*.py'):
      parts = path.relative_to(ROOT).with_suffix('').parts
      if parts[-1] == '__init__':
        parts = parts[:-1]
      out['.'.join(parts)] = path
  return out


def floor(name):
  best = None
  for prefix, level in FLOORS.items():
    if name == prefix or name.startswith(prefix + '.'):
      if best is None or len(prefix) > len(best[0]):
        best = (prefix, level)
  return best[1] if best else None


def imports(name, path, known):
  """The project modules `name` imports anywhere in its file."""
  tree = ast.parse(path.read_text())
  package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package.split('.')
        parent = parent[:len(parent) - node.level + 1]
        base = '.'.join(parent + ([base] if base else []))
      targets = [f'{base}.{a.name}' for a in node.names] + [base]
    else:
      continue
    for target in targets:
      while target and target not in known:
        target = target.rpartition('.')[0]
      if target and target != name and not name.startswith(target + '.'):
        found.add(target)
  return found


def test_no_import_runs_up_a_floor():
  known = modules()
  wrong = []
  for name, path in known.items():
    mine = floor(name)
    for target in imports(name, path, known):
      theirs = floor(target)
      if mine and theirs and theirs < mine:
        wrong.append(f'{name} -> {target}')
  assert not wrong


def test_no_import_cycles():
  known = modules()
  graph = {n: imports(n, p, known) for n, p in known.items()}
  # Package __init__ files that re-export their modules are not cycles.
  graph = {n: {t for t in ts if not n.startswith(t + '.')}
           for n, ts in graph.items()}
  cycles = []

  def visit(node, stack, seen):
    for nxt in sorted(graph.get(node, ())):
      if nxt in stack:
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in seen:
        seen.add(nxt)
        visit(nxt, stack + [nxt], seen)

  for start in sorted(graph):
    visit(start, [start], {start})
  pairs = {tuple(c) for c in cycles if len(c) == 3}  # a -> b -> a
  assert not pairs, sorted(pairs)
