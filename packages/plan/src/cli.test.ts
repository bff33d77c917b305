import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import pkg from '../package.json' with { type: 'json' };
import { helpText, main } from './cli';
import { balancedness, rebalanceExperts } from './placement/eplb';
import { planHybridEp } from './placement/hybridep';
import { refinePlacement } from './placement/refine';
import { dualPipe, dualPipeV } from './schedule/dualpipe';
import { formatScheduleText, scheduleToJson } from './schedule/format';

/** Runs the CLI in-process and collects what it writes. */
async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
  });
  return { code, stdout, stderr };
}

const tmp = mkdtempSync(join(tmpdir(), 'switchyard-plan-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('switchyard-plan schedule', () => {
  it('prints a DualPipe schedule as text, one line per rank (the help example)', async () => {
    const { code, stdout, stderr } = await run(
      'schedule',
      '--kind',
      'dualpipe',
      '--stages',
      '8',
      '--micro-batches',
      '20',
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(`${formatScheduleText(dualPipe({ ranks: 8, microBatches: 20 }))}\n`);
    expect(stdout.split('\n')[0]).toMatch(/^rank 0: F0 F0 F0 F0 F0 F0 F0 F1 B1i W F1 /);
  });

  it('reads --stages as the stage count 2P for dualpipev', async () => {
    const { code, stdout } = await run(
      'schedule',
      '--kind',
      'dualpipev',
      '--stages',
      '8',
      '--micro-batches',
      '10',
    );
    expect(code).toBe(0);
    expect(stdout).toBe(`${formatScheduleText(dualPipeV({ ranks: 4, microBatches: 10 }))}\n`);
    expect(stdout.trimEnd().split('\n')).toHaveLength(4);
  });

  it('prints JSON that parses back to the schedule', async () => {
    const { code, stdout } = await run(
      'schedule',
      '--kind',
      'dualpipe',
      '--stages',
      '4',
      '--micro-batches',
      '8',
      '--format',
      'json',
    );
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual(scheduleToJson(dualPipe({ ranks: 4, microBatches: 8 })));
  });

  it('writes an SVG timeline to --out', async () => {
    const file = join(tmp, 'dualpipe.svg');
    const { code, stdout } = await run(
      'schedule',
      '--kind=dualpipe',
      '--stages=4',
      '--micro-batches=8',
      '--format=svg',
      `--out=${file}`,
    );
    expect(code).toBe(0);
    expect(stdout).toBe('');
    const svg = readFileSync(file, 'utf8');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain('>F0&#38;B1</text>');
    expect(svg.trimEnd()).toMatch(/<\/svg>$/);
  });

  it('prints the other kinds with their tokens', async () => {
    const { code, stdout, stderr } = await run(
      'schedule',
      '--kind',
      '1f1b',
      '--stages',
      '4',
      '--micro-batches',
      '8',
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout.trimEnd().split('\n')).toHaveLength(4);
    expect(stdout).toMatch(/^rank 0: F F F F /);
    const interleaved = await run(
      'schedule',
      '--kind',
      'interleaved',
      '--stages',
      '4',
      '--micro-batches',
      '8',
      '--chunks',
      '2',
    );
    expect(interleaved.code).toBe(0);
    expect(interleaved.stdout).toMatch(/^rank 0: Fc0 /);
  });
});

describe('switchyard-plan usage', () => {
  it('prints --help and --version', async () => {
    const help = await run('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toBe(`${helpText()}\n`);
    expect(help.stdout).toMatch(/for dualpipev the number\s+of stages 2P/);
    const version = await run('--version');
    expect(version).toEqual({ code: 0, stdout: `switchyard-plan ${pkg.version}\n`, stderr: '' });
  });

  it.each([
    [
      [],
      /^switchyard-plan: missing command: schedule, simulate, eplb, hybridep \(see switchyard-plan --help\)\n$/,
    ],
    [['plan'], /unknown command "plan", expected schedule/],
    [['schedule', '--stages', '8', '--micro-batches', '20'], /schedule needs --kind/],
    [['schedule', '--kind', 'dualpipe', '--micro-batches', '20'], /schedule needs --stages/],
    [
      ['schedule', '--kind', 'pipedream', '--stages', '8', '--micro-batches', '20'],
      /--kind must be one of gpipe, 1f1b/,
    ],
    [
      ['schedule', '--kind', 'dualpipe', '--stages', 'eight', '--micro-batches', '20'],
      /--stages must be an integer >= 1, got "eight"/,
    ],
    [
      ['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '2.5'],
      /--micro-batches must be an integer >= 1, got "2.5"/,
    ],
    [
      ['schedule', '--kind', 'dualpipev', '--stages', '7', '--micro-batches', '20'],
      /--stages for dualpipev is the number of stages 2P and must be even/,
    ],
    [
      ['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '20', '--chunks', '2'],
      /--chunks applies to --kind interleaved only, not to dualpipe/,
    ],
    [
      ['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '20', '--format', 'png'],
      /--format must be one of text, json, svg, got "png"/,
    ],
    [
      ['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '20', '--colour'],
      /Unknown option '--colour'/,
    ],
    [
      ['schedule', 'extra', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '20'],
      /no positional arguments, got extra/,
    ],
    // A size the kind cannot take: the generator's message, still a usage error.
    [
      ['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '10'],
      /^switchyard-plan: `microBatches` passed to dualPipe\(\) must be even and >= 2 \* ranks \(16\), got 10\n$/,
    ],
  ])('exits 2 with one line for %j', async (argv, message) => {
    const { code, stdout, stderr } = await run(...argv);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/^switchyard-plan: /);
  });

  it('exits 1 when the output cannot be written', async () => {
    const { code, stderr } = await run(
      'schedule',
      '--kind',
      'dualpipe',
      '--stages',
      '4',
      '--micro-batches',
      '8',
      '--out',
      join(tmp, 'missing-dir', 'x.txt'),
    );
    expect(code).toBe(1);
    expect(stderr).toMatch(/^switchyard-plan: ENOENT/);
  });
});

describe('switchyard-plan simulate', () => {
  const dsv3 = [
    'simulate',
    '--model',
    'deepseek-v3',
    '--cluster',
    'h800x2048',
    '--pp',
    '16',
    '--ep',
    '64',
    '--schedule',
    'dualpipe',
    '--micro-batches',
    '120',
    '--global-batch',
    '15360',
    '--precision',
    'fp8',
  ];

  it('prints the DeepSeek-V3 report as text (the help example)', async () => {
    const { code, stdout, stderr } = await run(...dsv3);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^deepseek-v3 on 2048 x h800: PP 16 \(dualpipe\), EP 64, DP 2; 120 micro-batches/);
    expect(stdout).toMatch(/step time +\d+\.\d+ s/);
    expect(stdout).toMatch(/K GPU-hours per trillion tokens/);
    expect(stdout).toMatch(/671\.0B total, 37\.6B activated/);
    expect(helpText()).toContain('simulate --model MODEL --cluster NAME --pp P --ep G');
  });

  it('simulates data parallelism on a measured machine profile (--machine) with a Switchyard preset', async () => {
    const profile = new URL('../../../benchmarks/machine-profile-node2core.json', import.meta.url).pathname;
    const small = new URL('../../model/src/presets/small.json', import.meta.url).pathname;
    const args = ['simulate', '--model', small, '--machine', profile, '--pp', '1', '--ep', '1', '--dp', '2'];
    const { code, stdout, stderr } = await run(
      ...args,
      '--schedule',
      '1f1b',
      '--micro-batches',
      '1',
      '--global-batch',
      '8',
      '--seq-len',
      '128',
      '--dp-collective',
      'all-reduce',
      '--efficiency',
      '1',
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(
      /^small on 2 x node2core: PP 1 \(1f1b\), EP 1, DP 2; 1 micro-batches of 4 x 128 tokens/,
    );
    expect(stdout).toMatch(/parameters +3\.87M total, 1\.51M activated/);
    expect(stdout).toMatch(/no memory limit in the preset/);
    const both = await run(...args, '--cluster', 'h100x2');
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/give --cluster or --machine, not both/);
    const missing = await run(
      'simulate',
      '--model',
      small,
      '--machine',
      '/nonexistent.json',
      '--pp',
      '1',
      '--ep',
      '1',
    );
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--machine must be a readable JSON file, got "\/nonexistent.json"/);
  });

  it('prints JSON with the report fields, and reads a config.json file', async () => {
    const { code, stdout } = await run(...dsv3, '--format', 'json');
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    expect(report.gpus).toBe(2048);
    expect(report.dp).toBe(2);
    expect(report.stepTime).toBeGreaterThan(0);
    expect(report.memory).toHaveLength(16);
    const file = join(tmp, 'mixtral.json');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(
      file,
      JSON.stringify({
        model_type: 'mixtral',
        hidden_size: 4096,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        intermediate_size: 14336,
        vocab_size: 32000,
        num_local_experts: 8,
        num_experts_per_tok: 2,
      }),
    );
    const mixtral = await run(
      'simulate',
      '--model',
      file,
      '--cluster',
      'h100x64',
      '--pp',
      '4',
      '--ep',
      '8',
      '--schedule',
      '1f1b',
      '--format',
      'json',
    );
    expect(mixtral.stderr).toBe('');
    expect(JSON.parse(mixtral.stdout).model).toBe('mixtral');
    expect(JSON.parse(mixtral.stdout).params.total / 1e9).toBeCloseTo(46.7, 1);
  });

  it.each([
    [
      ['--dp', '4'],
      /`pp \* ep \* dp` passed to simulateCluster\(\) must be equal to the cluster's 2048 GPUs/,
    ],
    [['--ep', '48', '--dp', '1', '--cluster', 'h800x768'], /`ep` .*256 routed experts, got 48/],
    [
      ['--cluster', 'h900x8'],
      /`cluster` passed to parseCluster\(\) must be a preset among h800, h100, a100, b200/,
    ],
    [['--schedule', 'zigzag'], /--schedule must be one of/],
    [['--kind', '1f1b'], /--kind does not apply to simulate/],
    [['--format', 'svg'], /--format for simulate must be text or json/],
    [
      ['--model', '/nonexistent.json'],
      /--model must be one of deepseek-v3, mixtral-8x7b or a readable JSON config file/,
    ],
  ])('exits 2 with one line for %j', async (extra, message) => {
    const argv = [...dsv3];
    for (let i = 0; i < extra.length; i += 2) {
      const at = argv.indexOf(extra[i]!);
      if (at >= 0) argv.splice(at, 2);
      argv.push(extra[i]!, extra[i + 1]!);
    }
    const { code, stderr } = await run(...argv);
    expect(stderr).toMatch(message);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(code).toBe(2);
  });

  it('rejects simulate flags on schedule', async () => {
    const { code, stderr } = await run(
      'schedule',
      '--kind',
      '1f1b',
      '--stages',
      '4',
      '--micro-batches',
      '8',
      '--pp',
      '4',
    );
    expect(code).toBe(2);
    expect(stderr).toMatch(/--pp does not apply to schedule/);
  });
});

describe('switchyard-plan eplb', () => {
  const LOAD = [[90, 132, 40, 61, 104, 165, 39, 4]];
  const loadFile = join(tmp, 'load.json');
  const flags = ['--replicas', '12', '--groups', '2', '--nodes', '2', '--gpus', '4'];

  it('prints per layer each GPU load and experts, balancedness and imbalance ratio', async () => {
    writeFileSync(loadFile, JSON.stringify(LOAD));
    const { code, stdout, stderr } = await run('eplb', '--load', loadFile, ...flags);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(
      [
        'eplb: 1 layer, 8 experts, 12 slots on 4 GPUs (3 each), 2 groups, 2 nodes, hierarchical policy',
        'layer 0: balancedness 0.9150, imbalance ratio 1.0929',
        '  GPU 0 (node 0): load 167, experts 1 3 2',
        '  GPU 1 (node 0): load 156, experts 1 0 0',
        '  GPU 2 (node 1): load 173.5, experts 5 4 6',
        '  GPU 3 (node 1): load 138.5, experts 5 4 7',
        '',
      ].join('\n'),
    );
  });

  it('refines with --refine and says what EPLB alone gave', async () => {
    writeFileSync(loadFile, JSON.stringify(LOAD));
    const { code, stdout } = await run('eplb', '--load', loadFile, ...flags, '--refine');
    expect(code).toBe(0);
    expect(stdout).toContain('hierarchical policy, refined');
    expect(stdout).toContain('layer 0: balancedness 0.9506 (EPLB alone 0.9150; 0 swaps, 1 moves)');
    expect(stdout).toContain('  GPU 2 (node 1): load 149, experts 5 5 6');
  });

  it('prints the maps and balance as JSON with --format json', async () => {
    writeFileSync(loadFile, JSON.stringify(LOAD));
    const plain = await run('eplb', '--load', loadFile, ...flags, '--format', 'json');
    expect(plain.code).toBe(0);
    const p = rebalanceExperts(LOAD, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
    expect(JSON.parse(plain.stdout)).toEqual({
      policy: 'hierarchical',
      refined: false,
      phy2log: p.physToLog,
      log2phy: p.logToPhys,
      logcnt: p.replicaCounts,
      ...balancedness(LOAD, p),
    });
    const refined = await run('eplb', '--load', loadFile, ...flags, '--refine', '--format=json');
    const r = refinePlacement(LOAD, p, { nodes: 2 });
    const json = JSON.parse(refined.stdout);
    expect(json.phy2log).toEqual(r.physToLog);
    expect(json.logcnt).toEqual(r.replicaCounts);
    expect(json.log2phy).toEqual(r.logToPhys);
    expect(json.eplbBalancedness).toEqual(balancedness(LOAD, p).balancedness);
    expect(json.moves).toEqual([1]);
  });

  it.each([
    [
      ['--replicas', '12', '--groups', '2', '--nodes', '2', '--gpus', '4'],
      /^switchyard-plan: eplb needs --load/,
    ],
    [['--load', 'LOAD', '--groups', '2', '--nodes', '2', '--gpus', '4'], /eplb needs --replicas/],
    [['--load', 'LOAD', ...flags, '--format', 'svg'], /--format for eplb must be text or json, got "svg"/],
    [['--load', 'LOAD', ...flags, '--pp', '2'], /--pp does not apply to eplb/],
    [
      ['--load', 'LOAD', '--replicas', 'x', '--groups', '2', '--nodes', '2', '--gpus', '4'],
      /--replicas must be an integer >= 1, got "x"/,
    ],
    [
      ['--load', 'LOAD', '--replicas', '10', '--groups', '2', '--nodes', '2', '--gpus', '4'],
      /`options\.replicas` .* a multiple of options\.gpus \(4\)/,
    ],
    [
      ['--load', 'LOAD', '--replicas', '12', '--groups', '3', '--nodes', '2', '--gpus', '4'],
      /`options\.groups` .* a divisor of the number of experts \(8\)/,
    ],
    [['--load', 'RAGGED', ...flags], /`load\[1\]\.length` .* rows must not be ragged/],
    [['--load', 'NEGATIVE', ...flags], /`load\[0\]\[1\]` .* finite number >= 0/],
    [
      ['--load', join(tmp, 'missing.json'), ...flags],
      /--load must be a readable JSON file of \[layer\]\[expert\] loads/,
    ],
  ])('rejects %j with one line and exit code 2', async (argv, message) => {
    writeFileSync(loadFile, JSON.stringify(LOAD));
    writeFileSync(join(tmp, 'ragged.json'), JSON.stringify([LOAD[0], [1, 2]]));
    writeFileSync(join(tmp, 'negative.json'), JSON.stringify([[1, -2, 3, 4, 5, 6, 7, 8]]));
    const files: Record<string, string> = {
      LOAD: loadFile,
      RAGGED: join(tmp, 'ragged.json'),
      NEGATIVE: join(tmp, 'negative.json'),
    };
    const { code, stdout, stderr } = await run('eplb', ...argv.map((a) => files[a] ?? a));
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('takes --json for --format json, and refuses the two when they disagree', async () => {
    writeFileSync(loadFile, JSON.stringify(LOAD));
    const viaFormat = await run('eplb', '--load', loadFile, ...flags, '--format', 'json');
    const viaJson = await run('eplb', '--load', loadFile, ...flags, '--json');
    expect(viaJson.code).toBe(0);
    expect(viaJson.stdout).toBe(viaFormat.stdout);
    const schedule = await run(
      'schedule',
      '--kind',
      '1f1b',
      '--stages',
      '2',
      '--micro-batches',
      '2',
      '--json',
    );
    expect(JSON.parse(schedule.stdout).kind).toBe('1f1b');
    const both = await run('eplb', '--load', loadFile, ...flags, '--json', '--format', 'text');
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--json and --format text disagree/);
  });

  it('reads a Switchyard run folder: metrics.jsonl shares x step tokens x K from run.json, --steps keeps the last', async () => {
    const folder = join(tmp, 'run');
    mkdirSync(folder, { recursive: true });
    writeFileSync(
      join(folder, 'metrics.jsonl'),
      [
        { step: 1, tokens: 100, expertLoad: [[0.5, 0.5, 0, 0, 0, 0, 0, 0]] },
        { step: 2, tokens: 300, expertLoad: [[0.25, 0.25, 0.25, 0.25, 0, 0, 0, 0]] },
        { step: 3, tokens: 400, expertLoad: [[0, 0, 0, 0, 0.25, 0.25, 0.25, 0.25]] },
      ]
        .map((r) => JSON.stringify({ loss: 1, ...r }))
        .join('\n'),
    );
    writeFileSync(
      join(folder, 'run.json'),
      JSON.stringify({ config: { model: { moe: { router: { k: 2 } } } } }),
    );
    const all = await run('eplb', '--load', folder, ...flags, '--json');
    expect(all.code).toBe(0);
    // step 1: 100 tokens x 2 x shares; step 2: 200 x 2; step 3: 100 x 2
    const want = [[200, 200, 100, 100, 50, 50, 50, 50]];
    expect(JSON.parse(all.stdout).gpuLoad).toEqual(
      balancedness(want, rebalanceExperts(want, { replicas: 12, groups: 2, nodes: 2, gpus: 4 })).gpuLoad,
    );
    const last = await run('eplb', '--load', folder, ...flags, '--steps', '1', '--json');
    const lastLoad = [[0, 0, 0, 0, 50, 50, 50, 50]];
    expect(JSON.parse(last.stdout).phy2log).toEqual(
      rebalanceExperts(lastLoad, { replicas: 12, groups: 2, nodes: 2, gpus: 4 }).physToLog,
    );
    const notRun = await run('eplb', '--load', tmp, ...flags);
    expect(notRun.code).toBe(2);
    expect(notRun.stderr).toMatch(/is a folder without a readable metrics.jsonl/);
    const stepsOnFile = await run('eplb', '--load', loadFile, ...flags, '--steps', '2');
    expect(stepsOnFile.stderr).toMatch(/--steps applies to a run folder/);
  });

  it('does not take eplb flags in schedule or simulate', async () => {
    const { code, stderr } = await run(
      'schedule',
      '--kind',
      '1f1b',
      '--stages',
      '2',
      '--micro-batches',
      '2',
      '--refine',
    );
    expect(code).toBe(2);
    expect(stderr).toMatch(/--refine does not apply to schedule/);
  });
});

describe('switchyard-plan hybridep', () => {
  const load = [Array.from({ length: 256 }, (_, e) => 1 / (e + 1))];
  const loadFile = join(tmp, 'load256.json');
  const flags = ['--datacenters', '8', '--wan-gbps', '10', '--tokens-per-expert', '4096'];

  it('prints EP, EP + EPLB and HybridEP side by side, and per layer what HybridEP moves', async () => {
    writeFileSync(loadFile, JSON.stringify(load));
    const { code, stdout, stderr } = await run('hybridep', '--load', loadFile, ...flags);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(
      'hybridep: deepseek-v3, 1 MoE layer x 256 experts, 8 datacenters of 8 h800 in 1 domain of 8, WAN 10 Gb/s + 5 ms per datacenter, 131072 tokens per datacenter',
    );
    expect(lines[1]).toMatch(
      /^migration bf16 \(88.0804 MB weights, 88.0804 MB gradients\); break-even 3072 tokens/,
    );
    expect(lines[3]).toMatch(/^ep +[\d.]+ +[\d.]+ +0 +0 +1.00x$/);
    const options = {
      model: (await import('./cluster/model')).DEEPSEEK_V3,
      hardware: (await import('./cluster/hardware')).HARDWARE_PRESETS.h800,
      datacenters: 8,
      wan: { alpha: 5e-3, beta: 10e9 / 8 },
      tokensPerDatacenter: 131072,
    };
    const ep = planHybridEp(load, { ...options, strategy: 'ep' });
    const hybrid = planHybridEp(load, options);
    expect(lines[5]).toContain(`${(ep.stepTime / hybrid.stepTime).toFixed(2)}x`);
    expect(lines[6]).toMatch(/^ {2}layer 0: \d+ migrations, expert share 0\.\d{3} of WAN bytes/);
  });

  it('prints JSON with each strategy, its layers and the migrated (DC, expert) pairs', async () => {
    writeFileSync(loadFile, JSON.stringify(load));
    const { code, stdout } = await run(
      'hybridep',
      '--load',
      loadFile,
      ...flags,
      '--strategy',
      'hybrid',
      '--migration',
      'fp8',
      '--json',
    );
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    expect(json.strategies).toHaveLength(1);
    const h = json.strategies[0];
    expect(h.strategy).toBe('hybrid');
    expect(h.migration).toEqual({ kind: 'fp8' });
    expect(h.migrated[0].length).toBe(h.layers[0].migrations);
    for (const [dc, e] of h.migrated[0]) {
      expect(dc).toBeGreaterThanOrEqual(0);
      expect(dc).toBeLessThan(8);
      expect(e).toBeLessThan(256);
    }
  });

  it.each([
    [['--datacenters', '8', '--wan-gbps', '10', '--tokens-per-expert', '64'], /hybridep needs --load/],
    [
      ['--load', 'LOAD', '--datacenters', '8', '--wan-gbps', '10'],
      /needs one of --tokens-per-expert and --tokens/,
    ],
    [['--load', 'LOAD', ...flags, '--migration', 'int4'], /--migration must be bf16, fp8 or low-rank:R:G/],
    [['--load', 'LOAD', ...flags, '--strategy', 'best'], /--strategy must be ep, eplb, hybrid or all/],
    [['--load', 'LOAD', ...flags, '--hardware', 'tpu'], /--hardware must be one of h800, h100, a100, b200/],
    [
      ['--load', 'LOAD', ...flags, '--domain-size', '3'],
      /`options.domainSize` .* a divisor of options.datacenters \(8\)/,
    ],
    [['--load', 'LOAD', ...flags, '--wan-gbps', '0'], /--wan-gbps must be a number > 0/],
    [
      ['--load', 'LOAD', ...flags, '--model', 'mixtral-8x7b'],
      /--load has 256 experts per layer but --model mixtral-8x7b has 8/,
    ],
    [['--load', 'LOAD', ...flags, '--replicas', '4'], /--replicas does not apply to hybridep/],
  ])('rejects %j with one line and exit code 2', async (argv, message) => {
    writeFileSync(loadFile, JSON.stringify(load));
    const { code, stderr } = await run('hybridep', ...argv.map((a) => (a === 'LOAD' ? loadFile : a)));
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});
