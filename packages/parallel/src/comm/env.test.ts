// Ranks started by Slurm (srun) and by a Kubernetes indexed Job: the environment each gives a
// process, turned into launch settings; and two local processes per scheduler that find each other
// from those environments alone.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expectNoLeaks } from '@switchyard/tensor';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../test/fixtures/net';
import { expandHostlist, schedulerLaunchConfig } from './env';

const nodeScript = fileURLToPath(new URL('../../test/fixtures/scheduled-node.ts', import.meta.url));
const packageDir = fileURLToPath(new URL('../..', import.meta.url));
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe('expandHostlist', () => {
  it('expands Slurm compressed host lists in order, keeping zero padding', () => {
    expect(expandHostlist('gpu[01-03,07],login')).toEqual(['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login']);
    expect(expandHostlist('rack[1-2]-n[8-9]')).toEqual(['rack1-n8', 'rack1-n9', 'rack2-n8', 'rack2-n9']);
    expect(expandHostlist('localhost')).toEqual(['localhost']);
    expect(() => expandHostlist('gpu[01-03')).toThrow(/balanced brackets/);
    expect(() => expandHostlist('gpu[3-1]')).toThrow(/end is >= their start/);
    expect(() => expandHostlist('')).toThrow(/a non-empty Slurm host list/);
  });
});

describe('schedulerLaunchConfig', () => {
  const srun = {
    SLURM_PROCID: '3',
    SLURM_STEP_ID: '0',
    SLURM_NTASKS: '8',
    SLURM_STEP_NUM_TASKS: '4',
    SLURM_STEP_NODELIST: 'gpu[07-08]',
    SLURM_JOB_NODELIST: 'gpu[01-08]',
  };

  it('reads a Slurm job step: task rank, task count, first host of the step', () => {
    const s = schedulerLaunchConfig(srun)!;
    expect(s.scheduler).toBe('slurm');
    expect(s.config).toEqual({ nnodes: 4, nodeRank: 3, master: 'gpu07:29500' });
    expect(s.summary).toMatch(
      /Slurm: task 3 of 4 \(SLURM_PROCID, SLURM_STEP_NUM_TASKS\), rendezvous gpu07:29500/,
    );
    const explicit = schedulerLaunchConfig({ ...srun, MASTER_ADDR: '10.0.0.5', MASTER_PORT: '6000' })!;
    expect(explicit.config.master).toBe('10.0.0.5:6000');
    const { SLURM_STEP_NUM_TASKS: _, SLURM_STEP_NODELIST: __, ...old } = srun;
    expect(schedulerLaunchConfig(old)!.config).toEqual({ nnodes: 8, nodeRank: 3, master: 'gpu01:29500' });
  });

  it('leaves the batch script (no job step) and a plain shell alone unless told', () => {
    const { SLURM_STEP_ID: _, ...batch } = srun;
    expect(schedulerLaunchConfig(batch)).toBeUndefined();
    expect(schedulerLaunchConfig({})).toBeUndefined();
    expect(schedulerLaunchConfig({ ...batch, SWITCHYARD_SCHEDULER: 'slurm' })?.config.nodeRank).toBe(3);
    expect(schedulerLaunchConfig({ ...srun, SWITCHYARD_SCHEDULER: 'none' })).toBeUndefined();
  });

  it('reads a Kubernetes indexed Job: completion index, node count, pod 0 through the headless service', () => {
    const pod = {
      JOB_COMPLETION_INDEX: '1',
      HOSTNAME: 'moe-train-1',
      SWITCHYARD_SERVICE: 'moe',
      SWITCHYARD_NNODES: '2',
    };
    const k = schedulerLaunchConfig(pod)!;
    expect(k.scheduler).toBe('kubernetes');
    expect(k.config).toEqual({ nnodes: 2, nodeRank: 1, master: 'moe-train-0.moe:29500' });
    expect(schedulerLaunchConfig({ ...pod, JOB_NAME: 'job7' })!.config.master).toBe('job7-0.moe:29500');
    expect(
      schedulerLaunchConfig({ ...pod, SWITCHYARD_NNODES: undefined }, { nnodes: 4 })!.config.nnodes,
    ).toBe(4);
  });

  it('names the variable that is missing or malformed', () => {
    expect(() => schedulerLaunchConfig({ ...srun, SLURM_PROCID: 'x' })).toThrow(
      /environment variable SLURM_PROCID: expected an integer >= 0, got "x"/,
    );
    expect(() => schedulerLaunchConfig({ ...srun, SLURM_PROCID: '4' })).toThrow(
      /SLURM_PROCID: expected an integer < SLURM_STEP_NUM_TASKS \(4\)/,
    );
    expect(() => schedulerLaunchConfig({ ...srun, MASTER_PORT: '99999' })).toThrow(
      /MASTER_PORT: expected a port/,
    );
    expect(() => schedulerLaunchConfig({ JOB_COMPLETION_INDEX: '0', SWITCHYARD_NNODES: '2' })).toThrow(
      /SWITCHYARD_SERVICE: expected the name of the headless service/,
    );
    expect(() => schedulerLaunchConfig({ JOB_COMPLETION_INDEX: '0' })).toThrow(/SWITCHYARD_NNODES/);
    expect(() =>
      schedulerLaunchConfig({
        JOB_COMPLETION_INDEX: '0',
        SWITCHYARD_NNODES: '2',
        SWITCHYARD_SERVICE: 's',
        HOSTNAME: 'pod',
      }),
    ).toThrow(/JOB_NAME: expected the Job's name \(the pod hostname "pod" is not <job>-0\)/);
    expect(() => schedulerLaunchConfig({ SWITCHYARD_SCHEDULER: 'pbs' })).toThrow(/SWITCHYARD_SCHEDULER/);
  });
});

/** Runs one process with `env` added; resolves with its RESULT (or ERROR) line and exit code. */
function runProcess(env: Record<string, string>): Promise<{ code: number | null; line: string }> {
  const proc = spawn(process.execPath, ['--conditions=@switchyard/source', '--import', 'tsx', nodeScript], {
    cwd: packageDir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  const kill = setTimeout(() => proc.kill('SIGKILL'), 100_000);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (c: Buffer) => {
    out += c.toString();
  });
  proc.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
  });
  return new Promise((resolve) =>
    proc.on('exit', (code) => {
      clearTimeout(kill);
      resolve({
        code,
        line: out.split('\n').find((l) => /^(RESULT|ERROR) /.test(l)) ?? `no result: ${out} ${err}`,
      });
    }),
  );
}

describe('two local processes started as a scheduler would', () => {
  it('find each other from a Slurm job step and from a Kubernetes indexed Job environment', async () => {
    const [slurmPort, k8sPort] = [await freePort(), await freePort()];
    const slurm = [0, 1].map((k) =>
      runProcess({
        SLURM_JOB_ID: '4242',
        SLURM_STEP_ID: '0',
        SLURM_PROCID: String(k),
        SLURM_LOCALID: String(k),
        SLURM_NTASKS: '2',
        SLURM_STEP_NUM_TASKS: '2',
        SLURM_STEP_NODELIST: 'localhost',
        MASTER_PORT: String(slurmPort),
      }),
    );
    // The pod hostname names the Job; locally MASTER_ADDR stands in for <job>-0.<service>.
    const k8s = [0, 1].map((k) =>
      runProcess({
        JOB_COMPLETION_INDEX: String(k),
        HOSTNAME: `moe-train-${k}`,
        SWITCHYARD_SERVICE: 'moe',
        SWITCHYARD_NNODES: '2',
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(k8sPort),
      }),
    );
    const done = await Promise.all([...slurm, ...k8s]);
    for (const [i, d] of done.entries()) {
      expect(d.line, d.line).toMatch(/^RESULT /);
      expect(d.code).toBe(0);
      const r = JSON.parse(d.line.slice(7)) as {
        scheduler: string;
        ranks: number[];
        worldSize: number;
        results: { transport: string; sum3: number[] }[];
      };
      expect(r.scheduler).toBe(i < 2 ? 'slurm' : 'kubernetes');
      expect(r.worldSize).toBe(2);
      expect(r.ranks).toEqual([i % 2]);
      expect(r.results[0]!.transport).toBe('zmq');
    }
    // both ranks of a job see the same reduced values
    const sums = done.map((d) =>
      JSON.stringify((JSON.parse(d.line.slice(7)) as { results: { sum3: number[] }[] }).results[0]!.sum3),
    );
    expect(sums[0]).toBe(sums[1]);
    expect(sums[2]).toBe(sums[3]);
  }, 120_000);

  it('leaves no tensors behind in the test process', async () => {
    await expectNoLeaks(() => freePort());
  });
});
