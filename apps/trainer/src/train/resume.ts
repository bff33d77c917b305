/**
 * `--resume`: finding the checkpoint (passing over damaged ones of a run folder), loading it on the
 * backend it was trained on, validating its trainer state, extending a run's steps when asked, and
 * refusing a finished run without an extension or data that differs from the data the checkpoint
 * was trained on.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHECKPOINT_FILES, type LoadedCheckpoint } from '@switchyard/model';
import { initBackend, isSwitchyardError, SwitchyardError, tf } from '@switchyard/tensor';
import { loadRunCheckpoint } from '../compress/scratch';
import type { TrainConfig } from '../config/schema';
import type { PreparedData } from '../data/prepare';
import { resumeCandidates } from '../run/outdir';
import { dataFingerprint, parseTrainerState, type TrainerState } from './state';

/** A checkpoint a run continues from. */
export interface Resumed {
  readonly checkpointDir: string;
  /** The run folder the checkpoint belongs to; training continues there. */
  readonly runDir: string;
  /** The trainer state, with `train.steps` set to the extension when there is one. */
  readonly state: TrainerState;
  /** The loaded checkpoint; its model becomes the run's model. */
  readonly loaded: LoadedCheckpoint;
  /** Newer checkpoints of the run that did not verify, passed over, with why. */
  readonly skipped: readonly { readonly dir: string; readonly reason: string }[];
  /** `train.steps` the checkpoint's run was configured with, when `extendSteps` changed it. */
  readonly extendedFrom?: number;
}

/**
 * Opens `--resume DIR` (a run or checkpoint folder): initialises the backend the run was trained on
 * (else `backend`), loads and verifies the checkpoint and its trainer state. For a run folder, a
 * checkpoint that does not verify is passed over for the next newest one (the caller reports
 * `skipped`). `extendSteps` sets a new `train.steps`, which lets a finished run train on (the
 * learning-rate schedule then ends at the new last step); without it a finished run is refused.
 */
export async function openResume(
  dir: string,
  backend: TrainConfig['backend'],
  extendSteps?: number,
): Promise<Resumed> {
  const { runDir, checkpoints, named } = resumeCandidates(dir);
  const skipped: { dir: string; reason: string }[] = [];
  for (const checkpointDir of checkpoints) {
    // Load the tensors on the backend the run was trained on.
    await initBackend({ backend: savedBackend(checkpointDir) ?? backend });
    let loaded: LoadedCheckpoint;
    let state: TrainerState;
    try {
      loaded = await loadRunCheckpoint(checkpointDir);
    } catch (e) {
      if (named || !isSwitchyardError(e, 'CHECKPOINT_INVALID')) throw e;
      skipped.push({ dir: checkpointDir, reason: e.message });
      continue;
    }
    try {
      state = parseTrainerState(loaded.trainerState, checkpointDir);
    } catch (e) {
      release(loaded);
      if (named) throw e;
      skipped.push({ dir: checkpointDir, reason: (e as Error).message });
      continue;
    }
    try {
      const extended = extendRun(state, runDir, extendSteps);
      return {
        checkpointDir,
        runDir,
        state: extended,
        loaded,
        skipped,
        ...(extended !== state ? { extendedFrom: state.config.train.steps } : {}),
      };
    } catch (e) {
      release(loaded);
      throw e;
    }
  }
  throw new SwitchyardError(
    'CHECKPOINT_INVALID',
    `--resume: no checkpoint of ${runDir} verifies:\n${skipped.map((s) => `  ${s.dir}: ${s.reason}`).join('\n')}`,
  );
}

/** The state with `train.steps` extended, or unchanged; refuses to resume a finished run otherwise. */
function extendRun(state: TrainerState, runDir: string, extendSteps: number | undefined): TrainerState {
  const steps = state.config.train.steps;
  if (extendSteps === undefined || extendSteps === steps) {
    if (state.step >= steps) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `--resume: the run in ${runDir} already finished all ${steps} steps; to train it longer, add --set train.steps=N with N > ${steps}`,
      );
    }
    return state;
  }
  if (extendSteps <= state.step) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `train.steps: expected more than the ${state.step} steps the checkpoint has trained, got ${extendSteps}`,
    );
  }
  return { ...state, config: { ...state.config, train: { ...state.config.train, steps: extendSteps } } };
}

/** Refuses to continue on training data other than the checkpoint's (tokens per domain differ). */
export function checkSameData(resumed: Resumed, data: PreparedData): void {
  const now = JSON.stringify(dataFingerprint(data.trainStreams));
  const then = JSON.stringify(resumed.state.dataFingerprint);
  if (now !== then) {
    release(resumed.loaded);
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `--resume: the training data differs from the data the checkpoint was trained on (tokens per domain ${now} vs ${then})`,
    );
  }
}

function release(loaded: LoadedCheckpoint): void {
  loaded.model.dispose();
  tf.dispose(Object.values(loaded.extraTensors ?? {}));
}

/** The backend saved in a checkpoint's trainer state, read before the checkpoint is loaded and verified. */
function savedBackend(checkpointDir: string): TrainConfig['backend'] | undefined {
  try {
    const raw = JSON.parse(readFileSync(join(checkpointDir, CHECKPOINT_FILES.trainerState), 'utf8')) as {
      config?: { backend?: unknown };
    };
    const b = raw.config?.backend;
    return b === 'auto' || b === 'tensorflow' || b === 'wasm' || b === 'cpu' ? b : undefined;
  } catch {
    return undefined;
  }
}
