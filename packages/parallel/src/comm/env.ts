/**
 * Ranks started by an existing scheduler: the launch settings (node count, node rank, rendezvous
 * address) read from the environment a Slurm job step (`srun`) or a Kubernetes indexed Job gives
 * each process. Each such process is one node of the launcher's multi-node mode (one launcher per
 * process, `--ranks` worker ranks inside it).
 *
 * - Slurm: node rank `SLURM_PROCID`, nodes `SLURM_STEP_NUM_TASKS` (else `SLURM_NTASKS`), rendezvous on
 *   the first host of `SLURM_STEP_NODELIST` (else `SLURM_JOB_NODELIST`, `SLURM_NODELIST`; Slurm's
 *   compressed host lists such as `gpu[01-04,07]` are expanded) at `MASTER_PORT` (default 29500).
 * - Kubernetes indexed Job: node rank `JOB_COMPLETION_INDEX`, nodes `SWITCHYARD_NNODES` (the Job's
 *   completions; or `--nnodes`), rendezvous on pod 0 through the headless service named by
 *   `SWITCHYARD_SERVICE`: `<job>-0.<service>` (the job name from `JOB_NAME`, else from the pod's
 *   hostname `<job>-<index>`), at `MASTER_PORT` (default 29500).
 *
 * Under both, `MASTER_ADDR` (with `MASTER_PORT`) names the rendezvous explicitly instead.
 * `SWITCHYARD_SCHEDULER` = `auto` (default), `slurm`, `kubernetes` or `none` chooses.
 */
import { invalidArgument, SwitchyardError } from '@switchyard/tensor';
import { type LaunchConfig, parseMaster } from './launch';

/** The schedulers whose environment {@link schedulerLaunchConfig} reads. */
export type SchedulerKind = 'slurm' | 'kubernetes';

/** Default rendezvous port when `MASTER_PORT` is not set. */
export const DEFAULT_MASTER_PORT = 29500;

/** What {@link schedulerLaunchConfig} found. */
export interface SchedulerLaunch {
  readonly scheduler: SchedulerKind;
  /** `nnodes`, `nodeRank` and `master` for `launch()`. */
  readonly config: Pick<LaunchConfig, 'nnodes' | 'nodeRank' | 'master'>;
  /** One line saying where the settings came from, for logs. */
  readonly summary: string;
}

/** Environment variables, as `process.env` holds them. */
export type SchedulerEnv = Readonly<Record<string, string | undefined>>;

const FN = 'schedulerLaunchConfig';

function envError(name: string, expected: string, got: string | undefined): SwitchyardError {
  return new SwitchyardError(
    'CONFIG_INVALID',
    `environment variable ${name}: expected ${expected}, got ${got === undefined ? 'nothing (unset)' : JSON.stringify(got)}`,
  );
}

function intVar(env: SchedulerEnv, name: string, min: number): number {
  const raw = env[name];
  const n = raw === undefined || raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isInteger(n) || n < min) throw envError(name, `an integer >= ${min}`, raw);
  return n;
}

/** Splits at commas outside brackets. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '[') depth += 1;
    if (ch === ']') depth -= 1;
    if (depth < 0) throw invalidArgument('expandHostlist', 'hostlist', 'balanced brackets', s);
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw invalidArgument('expandHostlist', 'hostlist', 'balanced brackets', s);
  out.push(cur);
  return out.filter((p) => p.length > 0);
}

/** Expands the first bracket group of `item` (recursively the rest): `n[1-2]x` -> `n1x`, `n2x`. */
function expandItem(item: string, whole: string): string[] {
  const open = item.indexOf('[');
  if (open < 0) return [item];
  const close = item.indexOf(']', open);
  const prefix = item.slice(0, open);
  const rest = expandItem(item.slice(close + 1), whole);
  const out: string[] = [];
  for (const range of item.slice(open + 1, close).split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(range.trim());
    if (!m)
      throw invalidArgument('expandHostlist', 'hostlist', 'ranges like 01-04 or 7 inside brackets', whole);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo)
      throw invalidArgument('expandHostlist', 'hostlist', 'ranges whose end is >= their start', whole);
    const width = m[1]!.length;
    for (let i = lo; i <= hi; i++) {
      const num = String(i).padStart(width, '0');
      for (const tail of rest) out.push(`${prefix}${num}${tail}`);
    }
  }
  return out;
}

/**
 * Expands a Slurm host list (`SLURM_JOB_NODELIST`'s compressed form) into host names, in order.
 *
 * When to use: to find the hosts of a Slurm job, e.g. the first one as the rendezvous host.
 *
 * @example
 * ```ts
 * expandHostlist('gpu[01-03,07],login'); // ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login']
 * ```
 */
export function expandHostlist(hostlist: string): string[] {
  if (typeof hostlist !== 'string' || hostlist.trim() === '')
    throw invalidArgument('expandHostlist', 'hostlist', 'a non-empty Slurm host list', hostlist);
  return splitTop(hostlist.trim()).flatMap((item) => expandItem(item, hostlist));
}

/** `MASTER_ADDR:MASTER_PORT`, or `host` at `MASTER_PORT` (default 29500). */
function masterOf(env: SchedulerEnv, host: () => string): string {
  const port = env.MASTER_PORT === undefined ? DEFAULT_MASTER_PORT : intVar(env, 'MASTER_PORT', 1);
  const addr = env.MASTER_ADDR?.trim() ? env.MASTER_ADDR.trim() : host();
  const master = addr.includes(':') && !addr.startsWith('[') ? `[${addr}]:${port}` : `${addr}:${port}`;
  try {
    parseMaster(master);
  } catch {
    throw envError('MASTER_PORT', 'a port in [1, 65535]', env.MASTER_PORT);
  }
  return master;
}

function slurm(env: SchedulerEnv): SchedulerLaunch {
  const tasksVar = env.SLURM_STEP_NUM_TASKS !== undefined ? 'SLURM_STEP_NUM_TASKS' : 'SLURM_NTASKS';
  const nnodes = intVar(env, tasksVar, 1);
  const nodeRank = intVar(env, 'SLURM_PROCID', 0);
  if (nodeRank >= nnodes)
    throw envError('SLURM_PROCID', `an integer < ${tasksVar} (${nnodes})`, env.SLURM_PROCID);
  const listVar = ['SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST', 'SLURM_NODELIST'].find((v) => env[v]?.trim());
  const master = masterOf(env, () => {
    if (listVar === undefined)
      throw envError('SLURM_STEP_NODELIST', 'a host list (or set MASTER_ADDR)', undefined);
    return expandHostlist(env[listVar]!)[0]!;
  });
  return {
    scheduler: 'slurm',
    config: { nnodes, nodeRank, master },
    summary: `Slurm: task ${nodeRank} of ${nnodes} (SLURM_PROCID, ${tasksVar}), rendezvous ${master}${env.MASTER_ADDR ? ' (MASTER_ADDR)' : ` (first host of ${listVar})`}`,
  };
}

function kubernetes(env: SchedulerEnv, nnodesFlag: number | undefined): SchedulerLaunch {
  const nodeRank = intVar(env, 'JOB_COMPLETION_INDEX', 0);
  const nnodes =
    nnodesFlag ?? (env.SWITCHYARD_NNODES === undefined ? undefined : intVar(env, 'SWITCHYARD_NNODES', 1));
  if (nnodes === undefined)
    throw envError('SWITCHYARD_NNODES', "the Job's completions (or pass --nnodes)", undefined);
  if (nodeRank >= nnodes)
    throw envError(
      'JOB_COMPLETION_INDEX',
      `an integer < the number of nodes (${nnodes})`,
      env.JOB_COMPLETION_INDEX,
    );
  const master = masterOf(env, () => {
    const service = env.SWITCHYARD_SERVICE?.trim();
    if (!service)
      throw envError(
        'SWITCHYARD_SERVICE',
        'the name of the headless service of the Job (or set MASTER_ADDR)',
        undefined,
      );
    const suffix = `-${nodeRank}`;
    const host = env.HOSTNAME?.trim() ?? '';
    const job = env.JOB_NAME?.trim() || (host.endsWith(suffix) ? host.slice(0, -suffix.length) : '');
    if (!job)
      throw envError(
        'JOB_NAME',
        `the Job's name (the pod hostname ${JSON.stringify(host)} is not <job>${suffix})`,
        undefined,
      );
    return `${job}-0.${service}`;
  });
  return {
    scheduler: 'kubernetes',
    config: { nnodes, nodeRank, master },
    summary: `Kubernetes indexed Job: pod ${nodeRank} of ${nnodes} (JOB_COMPLETION_INDEX), rendezvous ${master}${env.MASTER_ADDR ? ' (MASTER_ADDR)' : ' (pod 0 through the headless service)'}`,
  };
}

/**
 * The launch settings an existing scheduler gives this process (see the file header for the
 * variables read), or undefined when none applies. `auto` (the default, or `SWITCHYARD_SCHEDULER`)
 * takes Slurm inside a job step (`SLURM_PROCID` and `SLURM_STEP_ID` set: started by `srun`, not the
 * batch script itself) and Kubernetes when `JOB_COMPLETION_INDEX` is set. Throws CONFIG_INVALID
 * naming the variable when one is missing or malformed.
 *
 * When to use: in a command line that starts ranks, before its own flags (which take precedence):
 * `launch({ ...schedulerLaunchConfig(process.env)?.config, ...flags })`.
 *
 * @example
 * ```ts
 * const env = { SLURM_PROCID: '1', SLURM_STEP_ID: '0', SLURM_STEP_NUM_TASKS: '2', SLURM_STEP_NODELIST: 'gpu[01-02]' };
 * schedulerLaunchConfig(env)?.config; // { nnodes: 2, nodeRank: 1, master: 'gpu01:29500' }
 * ```
 */
export function schedulerLaunchConfig(
  env: SchedulerEnv,
  options: { readonly scheduler?: 'auto' | 'none' | SchedulerKind; readonly nnodes?: number } = {},
): SchedulerLaunch | undefined {
  if (env === null || typeof env !== 'object') throw invalidArgument(FN, 'env', 'an environment object', env);
  const choice = options.scheduler ?? env.SWITCHYARD_SCHEDULER ?? 'auto';
  if (!['auto', 'none', 'slurm', 'kubernetes'].includes(choice))
    throw envError('SWITCHYARD_SCHEDULER', 'auto, none, slurm or kubernetes', choice);
  if (choice === 'none') return undefined;
  if (choice === 'slurm') return slurm(env);
  if (choice === 'kubernetes') return kubernetes(env, options.nnodes);
  if (env.SLURM_PROCID !== undefined && (env.SLURM_STEP_ID ?? env.SLURM_STEPID) !== undefined)
    return slurm(env);
  if (env.JOB_COMPLETION_INDEX !== undefined) return kubernetes(env, options.nnodes);
  return undefined;
}
