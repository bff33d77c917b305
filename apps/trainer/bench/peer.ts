// The PyTorch peer of the trainer bench: whether the machine's Python has torch, and one run of
// benchmarks/peers/torch_small_preset.py read back (its last output line is JSON).
import { spawnSync } from 'node:child_process';

/** The peer script, from the repository root. */
export const PEER_SCRIPT = new URL('../../../benchmarks/peers/torch_small_preset.py', import.meta.url)
  .pathname;

/** How to get PyTorch where the check fails. */
export const INSTALL_HINT =
  'install PyTorch to run the peer: `apt install python3-torch` (Debian/Ubuntu) or `pip install torch`, then rerun';

/** Whether `python` imports torch: its version, or why not. */
export type TorchCheck =
  | { readonly ok: true; readonly version: string }
  | { readonly ok: false; readonly reason: string };

/** Runs `python -c 'import torch'` (a few seconds at most) and says whether it worked. */
export function checkTorch(python: string): TorchCheck {
  const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.error) return { ok: false, reason: `${python} could not be run (${r.error.message})` };
  if (r.status !== 0) {
    const last = r.stderr.trim().split('\n').at(-1) ?? '';
    return { ok: false, reason: `${python} cannot import torch (${last || `exit code ${r.status}`})` };
  }
  return { ok: true, version: r.stdout.trim() };
}

/** What the peer reports (its JSON line). */
export interface PeerResult {
  readonly torch: string;
  readonly threads: number;
  readonly params: number;
  readonly tokensPerSec: number;
  readonly stepSeconds: readonly number[];
  readonly losses: readonly number[];
}

/** The peer's report from its output: the last line, JSON with a numeric `tokensPerSec`. */
export function parsePeerOutput(stdout: string): PeerResult {
  const last = stdout.trim().split('\n').at(-1) ?? '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(last);
  } catch {
    throw new Error(`the peer's last output line should be its JSON report, got: ${last.slice(0, 200)}`);
  }
  const r = parsed as Partial<PeerResult> | null;
  if (
    r === null ||
    typeof r !== 'object' ||
    typeof r.tokensPerSec !== 'number' ||
    typeof r.params !== 'number'
  )
    throw new Error(
      `the peer's JSON report should hold numeric tokensPerSec and params, got: ${last.slice(0, 200)}`,
    );
  return r as PeerResult;
}

/** Runs the peer script with `python` for `steps` steps (the first `warmup` left out) and reads its report. */
export function runPeer(
  python: string,
  options: {
    readonly steps: number;
    readonly warmup: number;
    readonly vocab: number;
    readonly script?: string;
  },
): PeerResult {
  const args = [
    options.script ?? PEER_SCRIPT,
    `--steps=${options.steps}`,
    `--warmup=${options.warmup}`,
    `--vocab=${options.vocab}`,
    '--threads=1',
    '--json',
  ];
  const r = spawnSync(python, args, { encoding: 'utf8', timeout: 600_000 });
  if (r.error) throw new Error(`the peer (${python} ${args.join(' ')}) could not be run: ${r.error.message}`);
  if (r.status !== 0)
    throw new Error(
      `the peer (${python} ${args.join(' ')}) exited with ${r.status}: ${r.stderr.trim().slice(-500)}`,
    );
  return parsePeerOutput(r.stdout);
}
