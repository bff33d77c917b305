/**
 * The `switchyard-plan` command line: `schedule` generates a pipeline schedule and prints it as text,
 * JSON or an SVG timeline; `simulate` runs the cluster simulator and prints its report as text or
 * JSON; `eplb` places experts from per-layer loads (EPLB, optionally refined) and prints each GPU's
 * load and the balancedness, or the placement maps as JSON; `hybridep` plans cross-datacenter
 * expert parallelism (plain EP, EP + EPLB, HybridEP) and prints the simulated iterations. Loads
 * come from a JSON file or a Switchyard run folder. Usage errors are one line,
 * `switchyard-plan: <message>`, and exit code 2; other failures exit 1.
 *
 * The only file of the package that uses Node's modules; the library itself runs in the browser.
 */
import { realpathSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pkg from '../package.json' with { type: 'json' };
import { formatSimulationText } from './cluster/format';
import { type ClusterSpec, HARDWARE_PRESETS, type HardwarePreset, parseCluster } from './cluster/hardware';
import { type MachineProfile, machinePreset } from './cluster/machine';
import { MODEL_PRESETS, type ModelSpec, modelPreset, parseModelConfig } from './cluster/model';
import { type SimulateOptions, simulateCluster } from './cluster/simulate';
import { isPlanError } from './errors';
import { balancedness, type ExpertPlacement, rebalanceExperts } from './placement/eplb';
import {
  type CrossDcStrategy,
  type HybridEpOptions,
  type HybridEpPlan,
  type MigrationEncoding,
  planHybridEp,
} from './placement/hybridep';
import { type RefinedPlacement, refinePlacement } from './placement/refine';
import { parseRunLoads } from './placement/runload';
import { formatScheduleSvg, formatScheduleText, scheduleToJson } from './schedule/format';
import { generateSchedule } from './schedule/generate';
import { SCHEDULE_KINDS, type ScheduleKind, type ScheduleRequest } from './schedule/types';
import { validateSchedule } from './schedule/validate';

/** Where the CLI writes (process streams by default; tests pass collectors). */
export interface CliIO {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
}

const FORMATS = ['text', 'json', 'svg'] as const;
type Format = (typeof FORMATS)[number];

const NAME = 'switchyard-plan';

/** A usage error: printed as one line, exit code 2. */
class UsageError extends Error {}

/**
 * The `--help` text.
 *
 * When to use: `switchyard-plan --help` prints it; docs can quote it.
 *
 * @example
 * ```ts
 * helpText().startsWith('Usage: switchyard-plan schedule'); // true
 * ```
 */
export function helpText(): string {
  return `Usage: ${NAME} schedule --kind KIND --stages S --micro-batches N [options]
       ${NAME} simulate --model MODEL --cluster NAME --pp P --ep G [options]
       ${NAME} eplb --load LOAD --replicas R --groups G --nodes N --gpus P [--refine]
       ${NAME} hybridep --load LOAD --datacenters C --wan-gbps B --tokens-per-expert N [options]

Generate a pipeline schedule (the ops each rank runs, in order) and print it, or simulate one
training step of an MoE model on a cluster, or place replicated experts on GPUs from their loads,
or plan expert parallelism across datacenters.

Commands:
  schedule             generate one schedule
  simulate             simulate one training step (see "Simulate options")
  eplb                 replicate and place experts (see "EPLB options")
  hybridep             plain EP, EP + EPLB and HybridEP across datacenters (see "HybridEP options")

Options:
  --kind KIND          ${SCHEDULE_KINDS.join(', ')}
  --stages S           pipeline ranks P for every kind except dualpipev; for dualpipev the number
                       of stages 2P (even), so --stages 8 runs on 4 ranks
  --micro-batches N    micro-batches per optimizer step (dualpipe: even and >= 2P;
                       dualpipev: >= 2P = S)
  --chunks V           chunks (stages) per rank, interleaved only (default 2)
  --layers L           model layers, to check that the stages divide them
  --format FORMAT      text (default): one line of tokens per rank;
                       json: the schedule object; svg: a timeline of its replay
                       with F=1, B=2, W=1, F&B=3
  --json               the same as --format json (every command)
  --out FILE           write to FILE instead of standard output
  --version            print the version
  --help               print this help

Text tokens: dualpipe and dualpipev print F0 F1 B0 B1 B0i B1i W F0&B1 F1&B0 (the digit is the
direction, or dualpipev's leg; i = backward for the input only); the other kinds print F B Bi W,
with a chunk suffix (Fc1) when a rank holds more than one chunk, and F&B for an overlapped pair.

Simulate options:
  --model MODEL        ${Object.keys(MODEL_PRESETS).join(', ')}, or a config.json (Hugging Face
                       mixtral, qwen2_moe, deepseek_v3; or a Switchyard model config)
  --cluster NAME       <gpu>x<count>: h800, h100, a100, b200 (h800x2048)
  --machine FILE       instead of --cluster: a measured MachineProfile JSON (see
                       pnpm --filter switchyard-train bench:profile); GPUs = P * G * R
  --pp P               pipeline ranks (1: data parallelism only)
  --ep G               expert-parallel group size (divides the routed experts)
  --dp R               expert data-parallel replicas (default: GPUs / (P * G))
  --schedule KIND      ${SCHEDULE_KINDS.join(', ')} (default dualpipe)
  --micro-batches N    per step (default 4P; DualPipe needs N even and >= 2P)
  --chunks V           interleaved only (default 2)
  --global-batch B     sequences per step over the cluster (default N * G * R: one per micro-batch)
  --seq-len S          tokens per sequence (default 4096)
  --precision P        bf16 (default) or fp8 (GEMMs on the FP8 peak)
  --fp8-share X        share of GEMM FLOPs in FP8 with --precision fp8 (default 1)
  --efficiency X       achievable fraction of peak FLOP/s (default 0.5)
  --no-overlap         run F&B pairs' halves one after the other
  --dp-sync MODE       exposed (default) or hidden: the gradient sync after the pipeline
  --dp-collective C    zero1 (default: reduce-scatter + all-gather) or all-reduce
  --datacenters K      DP replicas spread over K datacenters (WAN between them; default 1)
  --format FORMAT      text (default) or json

EPLB options:
  --load LOAD          JSON [layer][expert] loads (routed token counts or shares), >= 0; or a
                       Switchyard run folder: its metrics.jsonl expertLoad shares x tokens x K
                       (K from run.json), summed over the steps
  --steps N            with a run folder, the last N steps only (default all)
  --replicas R         physical expert slots in all: a multiple of --gpus, >= the experts
  --groups G           expert groups (divides the experts); G % N == 0 keeps groups on a node
                       (hierarchical policy), otherwise replicas go anywhere (global policy)
  --nodes N            nodes (--gpus is a multiple of N)
  --gpus P             GPUs in all
  --refine             improve EPLB's placement by local search (refinePlacement)
  --format FORMAT      text (default): per layer each GPU's load and experts, balancedness
                       (mean/max) and imbalance ratio (max/mean); json: also the maps phy2log,
                       log2phy (padded with -1) and logcnt

HybridEP options:
  --load LOAD          as for eplb: [layer][expert] loads (the routing distribution per layer)
  --datacenters C      datacenters
  --wan-gbps B         WAN bandwidth of one datacenter, per direction, Gb/s
  --tokens-per-expert N  tokens of one datacenter per expert per layer and iteration at uniform
                       routing (tokens per datacenter = N * experts / top-k); or --tokens T
  --tokens T           tokens per datacenter per iteration
  --model MODEL        ${Object.keys(MODEL_PRESETS).join(', ')} or a config.json (default deepseek-v3);
                       its routed experts must match the load's
  --hardware NAME      ${Object.keys(HARDWARE_PRESETS).join(', ')} (default h800)
  --gpus-per-dc G      GPUs per datacenter (default the hardware's GPUs per node)
  --wan-latency-ms MS  latency per WAN transfer (default the hardware's, 5)
  --domain-size S      datacenters per EP domain, divides C (default the largest divisor <= experts)
  --strategy S         ep, eplb, hybrid or all (default all: the three side by side)
  --migration M        bf16 (default), fp8, or low-rank:R:G (rank R, groups of G experts)
  --efficiency X       achievable fraction of peak FLOP/s (default 0.5)
  --seq-len S          tokens per sequence (default 4096)

Examples:
  ${NAME} schedule --kind dualpipe --stages 8 --micro-batches 20
  ${NAME} simulate --model deepseek-v3 --cluster h800x2048 --pp 16 --ep 64 --schedule dualpipe \\
    --micro-batches 120 --global-batch 15360 --precision fp8
  ${NAME} eplb --load load.json --replicas 16 --groups 4 --nodes 2 --gpus 8 --refine
  ${NAME} eplb --load runs/my-run --steps 50 --replicas 12 --groups 1 --nodes 2 --gpus 4 --json
  ${NAME} hybridep --load load.json --datacenters 1000 --wan-gbps 10 --tokens-per-expert 4096 \
    --migration fp8`;
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        kind: { type: 'string' },
        stages: { type: 'string' },
        'micro-batches': { type: 'string' },
        chunks: { type: 'string' },
        layers: { type: 'string' },
        format: { type: 'string' },
        out: { type: 'string' },
        model: { type: 'string' },
        cluster: { type: 'string' },
        machine: { type: 'string' },
        pp: { type: 'string' },
        ep: { type: 'string' },
        dp: { type: 'string' },
        schedule: { type: 'string' },
        'global-batch': { type: 'string' },
        'seq-len': { type: 'string' },
        precision: { type: 'string' },
        'fp8-share': { type: 'string' },
        efficiency: { type: 'string' },
        'no-overlap': { type: 'boolean' },
        'dp-sync': { type: 'string' },
        'dp-collective': { type: 'string' },
        datacenters: { type: 'string' },
        load: { type: 'string' },
        replicas: { type: 'string' },
        groups: { type: 'string' },
        nodes: { type: 'string' },
        gpus: { type: 'string' },
        refine: { type: 'boolean' },
        json: { type: 'boolean' },
        steps: { type: 'string' },
        'wan-gbps': { type: 'string' },
        'wan-latency-ms': { type: 'string' },
        'tokens-per-expert': { type: 'string' },
        tokens: { type: 'string' },
        hardware: { type: 'string' },
        'gpus-per-dc': { type: 'string' },
        'domain-size': { type: 'string' },
        strategy: { type: 'string' },
        migration: { type: 'string' },
        version: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

type Values = ReturnType<typeof parse>['values'];

/** A whole number >= `min` from a flag, or a usage error naming the flag. */
function intFlag(flag: string, text: string, min: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`--${flag} must be an integer >= ${min}, got ${JSON.stringify(text)}`);
  }
  return value;
}

function required(
  values: Values,
  flag:
    | 'kind'
    | 'stages'
    | 'micro-batches'
    | 'model'
    | 'cluster'
    | 'pp'
    | 'ep'
    | 'load'
    | 'replicas'
    | 'groups'
    | 'nodes'
    | 'gpus'
    | 'datacenters'
    | 'wan-gbps',
  command = 'schedule',
): string {
  const value = values[flag];
  if (value === undefined) throw new UsageError(`${command} needs --${flag}`);
  return value;
}

const COMMANDS = ['schedule', 'simulate', 'eplb', 'hybridep'] as const;
type Command = (typeof COMMANDS)[number];

/** The flags each command takes (besides --help, --version, --format and --json). */
const FLAGS: Record<Command, readonly (keyof Values)[]> = {
  schedule: ['kind', 'stages', 'micro-batches', 'chunks', 'layers', 'out'],
  simulate: [
    'model',
    'cluster',
    'machine',
    'pp',
    'ep',
    'dp',
    'schedule',
    'micro-batches',
    'chunks',
    'global-batch',
    'seq-len',
    'precision',
    'fp8-share',
    'efficiency',
    'no-overlap',
    'dp-sync',
    'dp-collective',
    'datacenters',
  ],
  eplb: ['load', 'steps', 'replicas', 'groups', 'nodes', 'gpus', 'refine'],
  hybridep: [
    'load',
    'steps',
    'datacenters',
    'wan-gbps',
    'wan-latency-ms',
    'tokens-per-expert',
    'tokens',
    'model',
    'hardware',
    'gpus-per-dc',
    'domain-size',
    'strategy',
    'migration',
    'efficiency',
    'seq-len',
  ],
};

/** Fails when a flag the command does not take was given. */
function onlyFlagsOf(command: Command, values: Values): void {
  const allowed = new Set<string>([...FLAGS[command], 'help', 'version', 'format', 'json']);
  const stray = Object.keys(values).find((f) => !allowed.has(f) && values[f as keyof Values] !== undefined);
  if (stray !== undefined) throw new UsageError(`--${stray} does not apply to ${command}`);
}

/** The --format value, with --json as its alias. */
function formatFlag(values: Values): string | undefined {
  if (values.json === true) {
    if (values.format !== undefined && values.format !== 'json') {
      throw new UsageError(`--json and --format ${values.format} disagree: give one of them`);
    }
    return 'json';
  }
  return values.format;
}

/** A finite number from a flag (the simulator checks its range), or a usage error naming the flag. */
function numberFlag(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) {
    throw new UsageError(`--${flag} must be a number, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** The parsed JSON of the file a flag names; a usage error naming the flag when it cannot be read. */
async function readJson(flag: string, path: string, expected = 'a readable JSON file'): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new UsageError(
      `--${flag} must be ${expected}, got ${JSON.stringify(path)} (${(e as Error).message})`,
    );
  }
}

/** The model a --model value names: a preset, or a config.json file. */
async function loadModel(text: string): Promise<ModelSpec> {
  if (MODEL_PRESETS[text] !== undefined) return modelPreset(text);
  const presets = Object.keys(MODEL_PRESETS).join(', ');
  const json = await readJson('model', text, `one of ${presets} or a readable JSON config file`);
  const name = text.replace(/^.*[\\/]/, '').replace(/\.json$/, '');
  return parseModelConfig(json, name);
}

/** The simulator's options the flags describe. */
async function simulateOptions(values: Values): Promise<SimulateOptions> {
  const model = await loadModel(required(values, 'model', 'simulate'));
  const pp = intFlag('pp', required(values, 'pp', 'simulate'), 1);
  const ep = intFlag('ep', required(values, 'ep', 'simulate'), 1);
  let cluster: ClusterSpec;
  let dp: number;
  if (values.machine !== undefined) {
    if (values.cluster !== undefined) throw new UsageError('give --cluster or --machine, not both');
    dp = values.dp === undefined ? 1 : intFlag('dp', values.dp, 1);
    cluster = {
      hardware: machinePreset((await readJson('machine', values.machine)) as MachineProfile),
      gpus: pp * ep * dp,
    };
  } else {
    cluster = parseCluster(required(values, 'cluster', 'simulate'));
    dp =
      values.dp === undefined
        ? Math.max(1, Math.floor(cluster.gpus / (pp * ep)))
        : intFlag('dp', values.dp, 1);
  }
  const kindText = values.schedule ?? 'dualpipe';
  if (!(SCHEDULE_KINDS as readonly string[]).includes(kindText)) {
    throw new UsageError(
      `--schedule must be one of ${SCHEDULE_KINDS.join(', ')}, got ${JSON.stringify(kindText)}`,
    );
  }
  const schedule = kindText as ScheduleKind;
  const microBatches =
    values['micro-batches'] === undefined ? 4 * pp : intFlag('micro-batches', values['micro-batches'], 1);
  const globalBatch =
    values['global-batch'] === undefined
      ? microBatches * ep * dp
      : intFlag('global-batch', values['global-batch'], 1);
  const precision = values.precision ?? 'bf16';
  if (precision !== 'bf16' && precision !== 'fp8') {
    throw new UsageError(`--precision must be bf16 or fp8, got ${JSON.stringify(precision)}`);
  }
  const dpSync = values['dp-sync'] ?? 'exposed';
  if (dpSync !== 'exposed' && dpSync !== 'hidden') {
    throw new UsageError(`--dp-sync must be exposed or hidden, got ${JSON.stringify(dpSync)}`);
  }
  const dpCollective = values['dp-collective'] ?? 'zero1';
  if (dpCollective !== 'zero1' && dpCollective !== 'all-reduce') {
    throw new UsageError(`--dp-collective must be zero1 or all-reduce, got ${JSON.stringify(dpCollective)}`);
  }
  return {
    model,
    cluster,
    pp,
    ep,
    dp,
    microBatches,
    schedule,
    globalBatch,
    precision,
    dpSync,
    dpCollective,
    overlap: values['no-overlap'] !== true,
    ...(values.chunks === undefined ? {} : { chunks: intFlag('chunks', values.chunks, 1) }),
    ...(values['seq-len'] === undefined ? {} : { seqLen: intFlag('seq-len', values['seq-len'], 1) }),
    ...(values['fp8-share'] === undefined ? {} : { fp8Share: numberFlag('fp8-share', values['fp8-share']) }),
    ...(values.efficiency === undefined ? {} : { efficiency: numberFlag('efficiency', values.efficiency) }),
    ...(values.datacenters === undefined
      ? {}
      : { datacenters: intFlag('datacenters', values.datacenters, 1) }),
  };
}

async function renderSimulation(values: Values): Promise<string> {
  const format = formatFlag(values) ?? 'text';
  if (format !== 'text' && format !== 'json') {
    throw new UsageError(`--format for simulate must be text or json, got ${JSON.stringify(format)}`);
  }
  const report = simulateCluster(await simulateOptions(values));
  return format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : formatSimulationText(report);
}

/** A number as the eplb text report prints it: up to 6 significant digits, no trailing zeros. */
function num(x: number): string {
  return String(Number(x.toPrecision(6)));
}

/** The eplb report: per layer, each GPU's load and experts, balancedness and imbalance ratio. */
function eplbText(
  load: number[][],
  placement: ExpertPlacement,
  refined: RefinedPlacement | undefined,
  eplbBalance: readonly number[],
  nodes: number,
  groups: number,
): string {
  const b = balancedness(load, placement);
  const replicas = placement.physToLog[0]!.length;
  const slotsPerGpu = replicas / placement.gpus;
  const gpusPerNode = placement.gpus / nodes;
  const lines = [
    `eplb: ${load.length} layer${load.length === 1 ? '' : 's'}, ${load[0]!.length} experts, ${replicas} slots on ` +
      `${placement.gpus} GPUs (${slotsPerGpu} each), ${groups} groups, ${nodes} nodes, ${placement.policy} policy` +
      (refined === undefined ? '' : ', refined'),
  ];
  load.forEach((_, l) => {
    const steps =
      refined === undefined
        ? ''
        : ` (EPLB alone ${eplbBalance[l]!.toFixed(4)}; ${refined.swaps[l]} swaps, ${refined.moves[l]} moves)`;
    lines.push(
      `layer ${l}: balancedness ${b.balancedness[l]!.toFixed(4)}${steps}, imbalance ratio ${b.imbalanceRatio[l]!.toFixed(4)}`,
    );
    b.gpuLoad[l]!.forEach((x, p) => {
      const experts = placement.physToLog[l]!.slice(p * slotsPerGpu, (p + 1) * slotsPerGpu);
      lines.push(
        `  GPU ${p} (node ${Math.floor(p / gpusPerNode)}): load ${num(x)}, experts ${experts.join(' ')}`,
      );
    });
  });
  return `${lines.join('\n')}\n`;
}

/**
 * The loads --load names: a JSON [layer][expert] array, or a Switchyard run folder (its
 * metrics.jsonl, with K from run.json when there is one; --steps keeps the last steps).
 */
async function loadFlag(values: Values, command: Command): Promise<number[][]> {
  const path = required(values, 'load', command);
  let folder = false;
  try {
    folder = (await stat(path)).isDirectory();
  } catch {
    // not there: readJson below says so
  }
  if (!folder) {
    if (values.steps !== undefined) throw new UsageError('--steps applies to a run folder given as --load');
    return (await readJson(
      'load',
      path,
      'a readable JSON file of [layer][expert] loads or a run folder',
    )) as number[][];
  }
  let metrics: string;
  try {
    metrics = await readFile(join(path, 'metrics.jsonl'), 'utf8');
  } catch (e) {
    throw new UsageError(
      `--load ${JSON.stringify(path)} is a folder without a readable metrics.jsonl (a Switchyard run folder has one): ${(e as Error).message}`,
    );
  }
  let topK = 1;
  try {
    const run = JSON.parse(await readFile(join(path, 'run.json'), 'utf8')) as {
      config?: { model?: { moe?: { router?: { k?: unknown } } } };
    };
    const k = run.config?.model?.moe?.router?.k;
    if (typeof k === 'number' && Number.isInteger(k) && k >= 1) topK = k;
  } catch {
    // no run.json: counts are tokens x shares (K = 1), which places the same
  }
  const steps = values.steps === undefined ? undefined : intFlag('steps', values.steps, 1);
  return parseRunLoads(metrics, { topK, ...(steps === undefined ? {} : { steps }) }).load;
}

/** Runs `eplb`: reads the loads, places (and refines) and renders the report. */
async function renderEplb(values: Values): Promise<string> {
  const format = formatFlag(values) ?? 'text';
  if (format !== 'text' && format !== 'json') {
    throw new UsageError(`--format for eplb must be text or json, got ${JSON.stringify(format)}`);
  }
  const load = await loadFlag(values, 'eplb');
  const options = {
    replicas: intFlag('replicas', required(values, 'replicas', 'eplb'), 1),
    groups: intFlag('groups', required(values, 'groups', 'eplb'), 1),
    nodes: intFlag('nodes', required(values, 'nodes', 'eplb'), 1),
    gpus: intFlag('gpus', required(values, 'gpus', 'eplb'), 1),
  };
  const eplb = rebalanceExperts(load, options);
  const eplbBalance = balancedness(load, eplb).balancedness;
  const refined = values.refine === true ? refinePlacement(load, eplb, { nodes: options.nodes }) : undefined;
  const placement = refined ?? eplb;
  if (format === 'text') {
    return eplbText(load, placement, refined, eplbBalance, options.nodes, options.groups);
  }
  const b = balancedness(load, placement);
  const json = {
    policy: placement.policy,
    refined: refined !== undefined,
    phy2log: placement.physToLog,
    log2phy: placement.logToPhys,
    logcnt: placement.replicaCounts,
    gpuLoad: b.gpuLoad,
    balancedness: b.balancedness,
    imbalanceRatio: b.imbalanceRatio,
    ...(refined === undefined
      ? {}
      : { eplbBalancedness: eplbBalance, swaps: refined.swaps, moves: refined.moves }),
  };
  return `${JSON.stringify(json)}\n`;
}

/** A number > 0 from a flag. */
function positiveFlag(flag: string, text: string): number {
  const value = numberFlag(flag, text);
  if (!(value > 0)) throw new UsageError(`--${flag} must be a number > 0, got ${JSON.stringify(text)}`);
  return value;
}

/** The --migration value: bf16, fp8 or low-rank:R:G. */
function migrationFlag(text: string | undefined): MigrationEncoding {
  if (text === undefined || text === 'bf16') return { kind: 'bf16' };
  if (text === 'fp8') return { kind: 'fp8' };
  const m = /^low-rank:(\d+):(\d+)$/.exec(text);
  if (m === null) {
    throw new UsageError(
      `--migration must be bf16, fp8 or low-rank:R:G (rank, group size), got ${JSON.stringify(text)}`,
    );
  }
  return { kind: 'low-rank', rank: Number(m[1]), groupSize: Number(m[2]) };
}

/** Runs `hybridep`: plans the strategies asked for and renders them side by side. */
async function renderHybridEp(values: Values): Promise<string> {
  const format = formatFlag(values) ?? 'text';
  if (format !== 'text' && format !== 'json') {
    throw new UsageError(`--format for hybridep must be text or json, got ${JSON.stringify(format)}`);
  }
  const load = await loadFlag(values, 'hybridep');
  const model = await loadModel(values.model ?? 'deepseek-v3');
  const experts = Array.isArray(load) && Array.isArray(load[0]) ? load[0].length : undefined;
  if (experts !== undefined && experts !== model.experts) {
    throw new UsageError(
      `--load has ${experts} experts per layer but --model ${values.model ?? 'deepseek-v3'} has ${model.experts} routed experts`,
    );
  }
  const hwName = values.hardware ?? 'h800';
  const hardware = (HARDWARE_PRESETS as Record<string, HardwarePreset>)[hwName];
  if (hardware === undefined) {
    throw new UsageError(
      `--hardware must be one of ${Object.keys(HARDWARE_PRESETS).join(', ')}, got ${JSON.stringify(hwName)}`,
    );
  }
  if ((values['tokens-per-expert'] === undefined) === (values.tokens === undefined)) {
    throw new UsageError('hybridep needs one of --tokens-per-expert and --tokens');
  }
  const tokens =
    values.tokens !== undefined
      ? positiveFlag('tokens', values.tokens)
      : (positiveFlag('tokens-per-expert', values['tokens-per-expert']!) * model.experts) / model.topK;
  const strategyText = values.strategy ?? 'all';
  if (!['ep', 'eplb', 'hybrid', 'all'].includes(strategyText)) {
    throw new UsageError(`--strategy must be ep, eplb, hybrid or all, got ${JSON.stringify(strategyText)}`);
  }
  const strategies: CrossDcStrategy[] =
    strategyText === 'all' ? ['ep', 'eplb', 'hybrid'] : [strategyText as CrossDcStrategy];
  const options: HybridEpOptions = {
    model,
    hardware,
    datacenters: intFlag('datacenters', required(values, 'datacenters', 'hybridep'), 1),
    wan: {
      alpha:
        values['wan-latency-ms'] === undefined
          ? hardware.wan.alpha
          : numberFlag('wan-latency-ms', values['wan-latency-ms']) / 1000,
      beta: (positiveFlag('wan-gbps', required(values, 'wan-gbps', 'hybridep')) * 1e9) / 8,
    },
    tokensPerDatacenter: tokens,
    migration: migrationFlag(values.migration),
    ...(values['gpus-per-dc'] === undefined
      ? {}
      : { gpusPerDatacenter: intFlag('gpus-per-dc', values['gpus-per-dc'], 1) }),
    ...(values['domain-size'] === undefined
      ? {}
      : { domainSize: intFlag('domain-size', values['domain-size'], 1) }),
    ...(values.efficiency === undefined ? {} : { efficiency: numberFlag('efficiency', values.efficiency) }),
    ...(values['seq-len'] === undefined ? {} : { seqLen: intFlag('seq-len', values['seq-len'], 1) }),
  };
  const plans = strategies.map((strategy) => planHybridEp(load, { ...options, strategy }));
  return format === 'json' ? hybridEpJson(plans, options) : hybridEpText(plans, options, load.length);
}

/** At most this many (layer, DC, expert) triples are listed in JSON; beyond, counts only. */
const MAX_LISTED_MIGRATIONS = 100_000;

function hybridEpJson(plans: HybridEpPlan[], o: HybridEpOptions): string {
  const ep = plans.find((p) => p.strategy === 'ep');
  const E = o.model.experts;
  const json = {
    model: o.model.name,
    datacenters: o.datacenters,
    tokensPerDatacenter: o.tokensPerDatacenter,
    wan: o.wan,
    strategies: plans.map((p) => {
      const total = p.layers.reduce((a, x) => a + x.migrations, 0);
      return {
        strategy: p.strategy,
        stepTime: p.stepTime,
        ...(ep === undefined ? {} : { speedupOverEp: ep.stepTime / p.stepTime }),
        computeTime: p.computeTime,
        exposedComm: p.exposedComm,
        wanBytes: p.wanBytes,
        domainSize: p.domainSize,
        migration: p.migration,
        migrationBytes: p.migrationBytes,
        breakEvenTokens: p.breakEvenTokens,
        layers: p.layers,
        // [layer][[dc, expert], ...] of the migrations, when they are few enough to list
        ...(total > 0 && total <= MAX_LISTED_MIGRATIONS
          ? {
              migrated: p.migrated.map((flags) => {
                const pairs: [number, number][] = [];
                flags.forEach((f, i) => {
                  if (f === 1) pairs.push([Math.floor(i / E), i % E]);
                });
                return pairs;
              }),
            }
          : {}),
      };
    }),
  };
  return `${JSON.stringify(json)}\n`;
}

function hybridEpText(plans: HybridEpPlan[], o: HybridEpOptions, layers: number): string {
  const first = plans[0]!;
  const b = first.migrationBytes;
  const mb = (x: number) => `${num(x / 1e6)} MB`;
  const migration =
    o.migration?.kind === 'low-rank'
      ? `low-rank r = ${o.migration.rank}, groups of ${o.migration.groupSize} (${mb(b.weights)} each way, basis ${mb(b.basis)})`
      : `${o.migration?.kind ?? 'bf16'} (${mb(b.weights)} weights, ${mb(b.gradients)} gradients)`;
  const ep = plans.find((p) => p.strategy === 'ep');
  const lines = [
    `hybridep: ${o.model.name}, ${layers} MoE layer${layers === 1 ? '' : 's'} x ${o.model.experts} experts, ` +
      `${o.datacenters} datacenters of ${first.gpusPerDatacenter} ${o.hardware.name} in ${o.datacenters / first.domainSize} ` +
      `domain${o.datacenters / first.domainSize === 1 ? '' : 's'} of ${first.domainSize}, WAN ${num((o.wan.beta * 8) / 1e9)} Gb/s + ` +
      `${num(o.wan.alpha * 1000)} ms per datacenter, ${num(o.tokensPerDatacenter)} tokens per datacenter`,
    `migration ${migration}; break-even ${num(first.breakEvenTokens)} tokens per (datacenter, expert)`,
    'strategy  step s  token GB  migration GB  migrations  vs EP',
  ];
  for (const p of plans) {
    const migrations = p.layers.reduce((a, x) => a + x.migrations, 0);
    lines.push(
      [
        p.strategy.padEnd(8),
        num(p.stepTime).padStart(7),
        num(p.wanBytes.tokens / 1e9).padStart(9),
        num(p.wanBytes.migration / 1e9).padStart(13),
        String(migrations).padStart(11),
        ep === undefined ? '' : `${(ep.stepTime / p.stepTime).toFixed(2)}x`.padStart(6),
      ].join(' '),
    );
  }
  const hybrid = plans.find((p) => p.strategy === 'hybrid');
  hybrid?.layers.forEach((x, l) => {
    lines.push(
      `  layer ${l}: ${x.migrations} migrations, expert share ${x.expertShare.toFixed(3)} of WAN bytes, ` +
        `token phase ${num(x.tokenPhase)} s, weights ${num(x.weightPhase)} s, gradients ${num(x.gradientPhase)} s`,
    );
  });
  return `${lines.join('\n')}\n`;
}

/** The generator request the flags describe. */
function scheduleRequest(values: Values): ScheduleRequest {
  const kindText = required(values, 'kind');
  if (!(SCHEDULE_KINDS as readonly string[]).includes(kindText)) {
    throw new UsageError(
      `--kind must be one of ${SCHEDULE_KINDS.join(', ')}, got ${JSON.stringify(kindText)}`,
    );
  }
  const kind = kindText as ScheduleKind;
  const stages = intFlag('stages', required(values, 'stages'), 1);
  const microBatches = intFlag('micro-batches', required(values, 'micro-batches'), 1);
  if (kind === 'dualpipev' && (stages < 2 || stages % 2 !== 0)) {
    throw new UsageError(
      `--stages for dualpipev is the number of stages 2P and must be even and >= 2, got ${stages}`,
    );
  }
  if (values.chunks !== undefined && kind !== 'interleaved') {
    throw new UsageError(`--chunks applies to --kind interleaved only, not to ${kind}`);
  }
  const chunks = values.chunks === undefined ? undefined : intFlag('chunks', values.chunks, 1);
  const layers = values.layers === undefined ? undefined : intFlag('layers', values.layers, 1);
  return {
    kind,
    ranks: kind === 'dualpipev' ? stages / 2 : stages,
    microBatches,
    ...(chunks === undefined ? {} : { chunks }),
    ...(layers === undefined ? {} : { layers }),
  };
}

function outputFormat(values: Values): Format {
  const format = formatFlag(values) ?? 'text';
  if (!(FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`--format must be one of ${FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  }
  return format as Format;
}

function render(request: ScheduleRequest, format: Format): string {
  const schedule = generateSchedule(request);
  switch (format) {
    case 'text':
      return `${formatScheduleText(schedule)}\n`;
    case 'json':
      return `${JSON.stringify(scheduleToJson(schedule), null, 2)}\n`;
    case 'svg':
      return formatScheduleSvg(schedule, validateSchedule(schedule));
  }
}

/**
 * Runs the CLI with `argv` (without `node` and the script) and returns the exit code: 0 done,
 * 2 usage error (a bad flag, or a size the schedule kind cannot take), 1 anything else.
 *
 * When to use: the `switchyard-plan` binary calls it; tests call it in-process with collecting `io`.
 *
 * @example
 * ```ts
 * const code = await main(['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '20']);
 * ```
 */
export async function main(
  argv: readonly string[],
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  try {
    const { values, positionals } = parse(argv);
    if (values.help === true) {
      io.stdout.write(`${helpText()}\n`);
      return 0;
    }
    if (values.version === true) {
      io.stdout.write(`${NAME} ${pkg.version}\n`);
      return 0;
    }
    const [name, ...rest] = positionals;
    if (name === undefined) throw new UsageError(`missing command: ${COMMANDS.join(', ')}`);
    if (!(COMMANDS as readonly string[]).includes(name))
      throw new UsageError(`unknown command ${JSON.stringify(name)}, expected ${COMMANDS.join(', ')}`);
    const command = name as Command;
    if (rest.length > 0)
      throw new UsageError(`${command} takes no positional arguments, got ${rest.join(' ')}`);
    onlyFlagsOf(command, values);
    if (command === 'eplb') {
      io.stdout.write(await renderEplb(values));
      return 0;
    }
    if (command === 'hybridep') {
      io.stdout.write(await renderHybridEp(values));
      return 0;
    }
    if (command === 'simulate') {
      io.stdout.write(await renderSimulation(values));
      return 0;
    }
    const text = render(scheduleRequest(values), outputFormat(values));
    if (values.out === undefined) io.stdout.write(text);
    else await writeFile(values.out, text);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`${NAME}: ${e.message} (see ${NAME} --help)\n`);
      return 2;
    }
    if (isPlanError(e) && e.code === 'INVALID_ARGUMENT') {
      io.stderr.write(`${NAME}: ${e.message}\n`);
      return 2;
    }
    io.stderr.write(`${NAME}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/** True when this module is the program node started (the bin, possibly through a symlink), not an import. */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
