/**
 * A run's output folder: where it is, refusing to write into a folder that holds anything else,
 * and finding the checkpoint to resume from.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { CHECKPOINT_FILES } from '@switchyard/model';
import { SwitchyardError } from '@switchyard/tensor';

/** Files and folders of a run's output folder. */
export const RUN_FILES = {
  run: 'run.json',
  metrics: 'metrics.jsonl',
  evals: 'eval.jsonl',
  report: 'report.md',
  plots: 'plots',
  checkpoints: 'checkpoints',
  finalCheckpoint: 'final',
} as const;

/** `YYYYMMDD-HHMMSS` in local time. */
export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The output folder of a new run: `out` when given, else `runs/<name>-<time>`. */
export function defaultOutDir(out: string, name: string, now = new Date()): string {
  return resolve(out !== '' ? out : join('runs', `${name}-${timestamp(now)}`));
}

/**
 * Checks that a new run may write to `dir`: it must not exist, or be an empty folder. Throws
 * IO_ERROR otherwise (a folder holding another run, or any other files, is never written into).
 */
export function checkOutDirFree(dir: string): void {
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) {
    throw new SwitchyardError('IO_ERROR', `output folder ${dir} is a file; choose another with --out`);
  }
  const entries = readdirSync(dir);
  if (entries.length === 0) return;
  if (entries.includes(RUN_FILES.run)) {
    throw new SwitchyardError(
      'IO_ERROR',
      `output folder ${dir} holds another run (${RUN_FILES.run}); continue it with --resume ${dir} or choose another --out`,
    );
  }
  throw new SwitchyardError('IO_ERROR', `output folder ${dir} is not empty; choose another with --out`);
}

/** Step number of a `step-000123` checkpoint folder name, or undefined. */
export function checkpointStep(name: string): number | undefined {
  const m = /^step-(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Folder name of the periodic checkpoint after `step` optimizer steps. */
export function checkpointName(step: number): string {
  return `step-${String(step).padStart(6, '0')}`;
}

/** Periodic checkpoints of a run, oldest first. */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  const root = join(runDir, RUN_FILES.checkpoints);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ step: checkpointStep(name), dir: join(root, name) }))
    .filter(
      (c): c is { step: number; dir: string } =>
        c.step !== undefined && existsSync(join(c.dir, CHECKPOINT_FILES.manifest)),
    )
    .sort((a, b) => a.step - b.step);
}

/** The step a checkpoint's trainer_state.json records (undefined when unreadable: loading will say why). */
function savedStep(checkpointDir: string): number | undefined {
  try {
    const raw = JSON.parse(readFileSync(join(checkpointDir, CHECKPOINT_FILES.trainerState), 'utf8')) as {
      step?: unknown;
    };
    return typeof raw.step === 'number' ? raw.step : undefined;
  } catch {
    return undefined;
  }
}

/** Where `--resume DIR` may continue from. */
export interface ResumeCandidates {
  /** The run folder; training continues there. */
  readonly runDir: string;
  /** Checkpoint folders, the one to try first first. */
  readonly checkpoints: readonly string[];
  /** True when DIR named one checkpoint (no other is tried), false for a run folder. */
  readonly named: boolean;
}

/**
 * Resolves `--resume DIR`: a checkpoint folder (holding manifest.json) inside a run folder, or a run
 * folder, whose checkpoints (`final` and the periodic ones) are returned newest step first (`final`
 * before a periodic checkpoint of the same step), so a damaged one can be passed over for the next.
 */
export function resumeCandidates(dir: string): ResumeCandidates {
  const abs = resolve(dir);
  if (!existsSync(abs)) throw new SwitchyardError('CHECKPOINT_INVALID', `--resume: ${abs} does not exist`);
  if (existsSync(join(abs, CHECKPOINT_FILES.manifest))) {
    const parent = dirname(abs);
    const runDir = dirname(parent);
    if (basename(parent) !== RUN_FILES.checkpoints || !existsSync(join(runDir, RUN_FILES.run))) {
      throw new SwitchyardError(
        'CHECKPOINT_INVALID',
        `--resume: checkpoint ${abs} is not inside a run folder (RUN/${RUN_FILES.checkpoints}/NAME with RUN/${RUN_FILES.run}); ` +
          'training continues in the run folder it belongs to',
      );
    }
    return { runDir, checkpoints: [abs], named: true };
  }
  if (!existsSync(join(abs, RUN_FILES.run))) {
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `--resume: ${abs} is neither a checkpoint folder (${CHECKPOINT_FILES.manifest}) nor a run folder (${RUN_FILES.run})`,
    );
  }
  const found = listCheckpoints(abs).map((c) => ({ ...c, final: false }));
  const final = join(abs, RUN_FILES.checkpoints, RUN_FILES.finalCheckpoint);
  if (existsSync(join(final, CHECKPOINT_FILES.manifest))) {
    found.push({ step: savedStep(final) ?? Number.POSITIVE_INFINITY, dir: final, final: true });
  }
  if (found.length === 0) {
    throw new SwitchyardError('CHECKPOINT_INVALID', `--resume: run folder ${abs} holds no checkpoint yet`);
  }
  found.sort((a, b) => b.step - a.step || Number(b.final) - Number(a.final));
  return { runDir: abs, checkpoints: found.map((c) => c.dir), named: false };
}

/**
 * Resolves `--resume DIR` to the checkpoint tried first (see {@link resumeCandidates}) and its run
 * folder.
 */
export function resolveResume(dir: string): { checkpointDir: string; runDir: string } {
  const c = resumeCandidates(dir);
  return { checkpointDir: c.checkpoints[0]!, runDir: c.runDir };
}
