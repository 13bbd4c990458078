"""JAX's multi-process runtime and policy devices, with the tiny agent of
tests/tiny_agent.py in child processes (mock CPU devices are fixed when JAX
starts, so each configuration needs a process of its own).

- Two processes on localhost (gloo collectives), each with its own fixed
  half of a fixed batch, its own host inputs and acting a different number
  of times, train 3 steps: their parameters are identical and equal those of
  one process training on the whole batch over 2 mock devices.
- Policy devices of its own: same parameters and actions as the policy on
  the train devices; parameters are copied once per train step, not per
  policy call, and nothing recompiles.
"""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / 'tests' / 'tiny_agent.py')


def start(out, *args, devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_'
                      f'platform_device_count={devices}').strip()
  return subprocess.Popen(
      [sys.executable, SCRIPT, str(out), *map(str, args)], env=env,
      cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def finish(*procs, timeout=240):
  try:
    for proc in procs:
      output, _ = proc.communicate(timeout=timeout)
      assert proc.returncode == 0, output[-3000:]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()


def free_port():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def states(path):
  data = np.load(path)
  return {k: data[k] for k in data.files if k.startswith('state/')}, data


def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
  port = free_port()
  procs = [start(tmp_path / f'p{i}.npz', '--processes', 2, '--process', i,
                 '--port', port) for i in range(2)]
  # The reference does not act: in one process acting draws from the same
  # seed stream as training, with several processes it does not.
  ref = start(tmp_path / 'ref.npz', '--act', 0, devices=2)
  finish(*procs, ref)
  (s0, d0), (s1, d1) = states(tmp_path / 'p0.npz'), states(tmp_path / 'p1.npz')
  sref, dref = states(tmp_path / 'ref.npz')
  assert len(s0) > 10 and s0.keys() == s1.keys() == sref.keys()
  for key in s0:
    np.testing.assert_array_equal(s0[key], s1[key], err_msg=key)
    np.testing.assert_allclose(s0[key], sref[key], rtol=1e-4, atol=1e-5,
                               err_msg=key)
  assert int(s0['state/agent/opt/1/step']) == 3
  # Per-sequence outputs come back as each process's own rows.
  half = dref['priority'].shape[1] // 2
  np.testing.assert_allclose(d0['priority'], dref['priority'][:, :half],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(d1['priority'], dref['priority'][:, half:],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(d0['loss'], dref['loss'], rtol=1e-4)
  assert d0['loss'] == d1['loss']
  # The processes acted 3 and 6 times; the report ran on each alone.
  assert len(d0['actions']) == 3 and len(d1['actions']) == 6
  assert np.isfinite(d0['mse']) and np.isfinite(d1['mse'])
  for data in (d0, d1):
    assert dict(data['compiles'])['train'] == '1', data['compiles']
    assert dict(data['compiles'])['policy_train'] == '1', data['compiles']


def test_policy_devices_of_its_own(tmp_path):
  own = start(tmp_path / 'own.npz', '--train_devices', 2, '--policy_devices',
              2, '--act', 2, devices=4)
  shared = start(tmp_path / 'shared.npz', '--train_devices', 2, '--act', 2,
                 devices=4)
  finish(own, shared)
  (sown, down), (sshared, dshared) = (
      states(tmp_path / 'own.npz'), states(tmp_path / 'shared.npz'))
  for key in sshared:
    np.testing.assert_allclose(sown[key], sshared[key], rtol=1e-5,
                               atol=1e-6, err_msg=key)
  np.testing.assert_array_equal(down['actions'], dshared['actions'])
  assert down['carry_devices'].tolist() == [2, 3]
  assert dshared['carry_devices'].tolist() == [0, 1]
  # 6 policy calls over 3 train steps: a copy at init_policy and after
  # each train step that a policy call followed.
  assert int(down['policy_copies']) == 3
  assert int(dshared['policy_copies']) == 0
  assert dict(down['compiles'])['policy_train'] == '1', down['compiles']
