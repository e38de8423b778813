"""The SLURM array script against a real Slurm: munged, slurmctld and slurmd started on
localhost with a throw-away config (state in a temporary directory, one node with a fake
GPU: `Gres=gpu:1` backed by /dev/null), so `sbatch` itself parses the script, runs a smoke
sweep's array to completion, and judges the GPU variants with `--test-only`. Skipped only
where the daemons cannot start (no slurm-wlm / munge installed; .ci/run installs them)."""

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.helpers import run_script
from vae.sweeps import record

DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'sinfo')


def _conf(tmp, host):
  socket_path = tmp / 'munge' / 'munge.socket'
  lines = [
      'ClusterName=vaetest', f'SlurmctldHost={host}', 'SlurmUser=root', 'SlurmdUser=root',
      'SlurmctldPort=16917', 'SlurmdPort=16918', 'AuthType=auth/munge',
      f'AuthInfo=socket={socket_path}', f'StateSaveLocation={tmp}/state',
      f'SlurmdSpoolDir={tmp}/spool', f'SlurmctldPidFile={tmp}/slurmctld.pid',
      f'SlurmdPidFile={tmp}/slurmd.pid', f'SlurmctldLogFile={tmp}/slurmctld.log',
      f'SlurmdLogFile={tmp}/slurmd.log', 'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none', 'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU',
      'SchedulerType=sched/backfill', 'MpiDefault=none', 'ReturnToService=2',
      'JobCompType=jobcomp/none', 'AccountingStorageType=accounting_storage/none',
      'GresTypes=gpu', f'NodeName={host} CPUs={os.cpu_count()} RealMemory=4000 Gres=gpu:1 '
      'State=UNKNOWN', 'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP']
  (tmp / 'slurm.conf').write_text('\n'.join(lines) + '\n')
  (tmp / 'gres.conf').write_text(f'NodeName={host} Name=gpu File=/dev/null\n')
  return socket_path


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
  """SLURM_CONF's environment of a running localhost cluster; stopped afterwards."""
  missing = [d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(
      f'/usr/sbin/{d}')]
  if missing or os.geteuid() != 0:
    pytest.skip(f'Slurm cannot start here ({missing or "not root"}); .ci/run installs '
                'slurm-wlm and munge')
  tmp = tmp_path_factory.mktemp('slurm')
  for d in ('state', 'spool', 'munge'):
    (tmp / d).mkdir()
  host = socket.gethostname()
  sock = _conf(tmp, host)
  env = dict(os.environ, SLURM_CONF=str(tmp / 'slurm.conf'))
  procs = [subprocess.Popen(['munged', '--force', '--foreground', f'--socket={sock}',
                             f'--pid-file={tmp}/munge/munged.pid',
                             f'--log-file={tmp}/munge/munged.log',
                             f'--seed-file={tmp}/munge/seed'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
  time.sleep(1)
  for daemon in ('slurmctld', 'slurmd'):
    procs.append(subprocess.Popen([daemon, '-D', '-f', env['SLURM_CONF']], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    time.sleep(1)
  try:
    deadline = time.time() + 30
    while time.time() < deadline:
      state = subprocess.run(['sinfo', '-h', '-o', '%T'], env=env, capture_output=True,
                             text=True).stdout.strip()
      if state == 'idle':
        break
      time.sleep(0.5)
    else:
      pytest.skip(f'the localhost Slurm did not come up (node state {state!r})')
    yield env
  finally:
    for p in reversed(procs):
      p.terminate()
    for p in procs:
      try:
        p.wait(timeout=20)
      except subprocess.TimeoutExpired:
        p.kill()


def _wait_until_idle(env, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    queue = subprocess.run(['squeue', '-h', '-o', '%i %T %r'], env=env, capture_output=True,
                           text=True).stdout
    if not queue.strip():
      return
    assert 'PartitionConfig' not in queue and 'BadConstraints' not in queue, queue
    time.sleep(1)
  raise AssertionError(f'jobs still queued after {timeout} s: {queue}')


def test_a_real_sbatch_runs_the_sweeps_array_and_accepts_its_gpu_variants(slurm, tmp_path):
  root = tmp_path / 'sweep'
  spec = 'configs/default.py:smoke,sweep=tiny4'
  code, out, err = run_script('sweep', '--config', spec, '--workdir', root, '--mode', 'slurm',
                              '--unit', 'member', '--gpus_per_task', '0', '--partition',
                              'debug', '--mem', '1G', '--cpus_per_task', '1', '--time',
                              '00:10:00', '--axis', 'objective.beta=0.5',
                              '--config.train.num_epochs=1')
  assert code == 0, err
  script = root / 'sweep.sbatch'
  text = script.read_text()
  assert '#SBATCH --ntasks=1' in text and '#SBATCH --array=0-1' in text
  submitted = subprocess.run(['sbatch', str(script)], env=slurm, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
  assert submitted.returncode == 0, submitted.stderr
  _wait_until_idle(slurm)
  logs = '\n'.join(p.read_text() for p in root.glob('slurm-*.out'))
  assert record.statuses(root) == {'latent_dim=3,beta=0.5': 'finished',
                                   'latent_dim=5,beta=0.5': 'finished'}, logs[-3000:]
  # The GPU variants, judged by the scheduler itself (a fake GPU on the node).
  for directive in ('gpus-per-task', 'gres'):
    code, _, err = run_script('sweep', '--config', spec, '--workdir', tmp_path / directive,
                              '--mode', 'slurm', '--unit', 'group', '--gpu_directive',
                              directive, '--sbatch=--comment=vae', '--mem', '1G',
                              '--cpus_per_task', '1')
    assert code == 0, err
    gpu_script = tmp_path / directive / 'sweep.sbatch'
    judged = subprocess.run(['sbatch', '--test-only', str(gpu_script)], env=slurm,
                            capture_output=True, text=True, timeout=60)
    assert judged.returncode == 0 and 'to start' in judged.stderr, judged.stderr
  # The directive line the scheduler refuses without --ntasks (Slurm >= 22.05).
  bare = (tmp_path / 'bare.sh')
  bare.write_text('#!/bin/bash\n#SBATCH --gpus-per-task=1\ntrue\n')
  refused = subprocess.run(['sbatch', '--test-only', str(bare)], env=slurm,
                           capture_output=True, text=True, timeout=60)
  assert refused.returncode != 0 and 'ntasks' in refused.stderr
