"""Crafter score of runs, pooled over all their episodes (Hafner 2021).

  python scripts/crafter_score.py ~/logdir/crafter_seed0 [more logdirs ...]
  python scripts/crafter_score.py LOGDIR --prefix eval_episode --achievements

Reads each logdir's metrics.jsonl, where every finished Crafter episode left
episode/achievement_<name>_mean = 0 or 1 (embodied/envs/crafter.py). The
success rate of an achievement is the percent of episodes that unlocked it,
over all episodes of the run; the score is exp(mean_i ln(1 + s_i)) - 1 over
the 22 achievements. The in-run figure episode/crafter_score_mean is the same
formula over one env worker's episodes so far; this tool pools all workers.
With several logdirs it also prints the mean and standard deviation of the
per-run scores.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from embodied.envs.crafter import ACHIEVEMENTS, crafter_score  # noqa: E402


def success_rates(path, prefix='episode'):
  """(episodes, {achievement: percent}) from one metrics.jsonl."""
  keys = {n: f'{prefix}/achievement_{n}_mean' for n in ACHIEVEMENTS}
  counts = np.zeros(len(ACHIEVEMENTS))
  episodes = 0
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        raise SystemExit(f'Error: {path}:{number} is not valid JSON') from None
      if keys[ACHIEVEMENTS[0]] not in row:
        continue
      missing = [k for k in keys.values() if k not in row]
      if missing:
        raise SystemExit(f'Error: {path}:{number} lacks {missing[0]}')
      counts += [row[keys[n]] > 0 for n in ACHIEVEMENTS]
      episodes += 1
  rates = 100 * counts / max(episodes, 1)
  return episodes, dict(zip(ACHIEVEMENTS, rates.tolist()))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('logdirs', nargs='+', type=pathlib.Path)
  parser.add_argument('--prefix', default='episode',
                      help='episode (training) or eval_episode')
  parser.add_argument('--achievements', action='store_true',
                      help='also print the success rate of each achievement')
  args = parser.parse_args(argv)
  scores = []
  for logdir in args.logdirs:
    path = logdir / 'metrics.jsonl'
    if not path.exists():
      raise SystemExit(f'Error: {path} does not exist')
    episodes, rates = success_rates(path, args.prefix)
    if not episodes:
      print(f'{logdir}: no Crafter episodes under {args.prefix}/')
      continue
    score = crafter_score(list(rates.values()))
    scores.append(score)
    print(f'{logdir}: score {score:.2f}% over {episodes} episodes')
    if args.achievements:
      for name, rate in rates.items():
        print(f'  {name:20s} {rate:6.2f}%')
  if len(scores) > 1:
    print(f'mean {np.mean(scores):.2f}% std {np.std(scores):.2f}% over '
          f'{len(scores)} runs')
  return scores


if __name__ == '__main__':
  main()
