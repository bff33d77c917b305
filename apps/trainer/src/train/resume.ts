/**
 * `--resume`: finding the checkpoint, loading it on the backend it was trained on, validating its
 * trainer state, and refusing a run that already finished or data that differs from the data the
 * checkpoint was trained on.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHECKPOINT_FILES, type LoadedCheckpoint } from '@switchyard/model';
import { initBackend, SwitchyardError, tf } from '@switchyard/tensor';
import { loadRunCheckpoint } from '../compress/scratch';
import type { TrainConfig } from '../config/schema';
import type { PreparedData } from '../data/prepare';
import { resolveResume } from '../run/outdir';
import { dataFingerprint, parseTrainerState, type TrainerState } from './state';

/** A checkpoint a run continues from. */
export interface Resumed {
  readonly checkpointDir: string;
  /** The run folder the checkpoint belongs to; training continues there. */
  readonly runDir: string;
  readonly state: TrainerState;
  /** The loaded checkpoint; its model becomes the run's model. */
  readonly loaded: LoadedCheckpoint;
}

/**
 * Opens `--resume DIR` (a run or checkpoint folder): initialises the backend the run was trained on
 * (else `backend`), loads and validates the checkpoint, and refuses a run that finished all its steps.
 */
export async function openResume(dir: string, backend: TrainConfig['backend']): Promise<Resumed> {
  const { checkpointDir, runDir } = resolveResume(dir);
  // Load the tensors on the backend the run was trained on.
  await initBackend({ backend: savedBackend(checkpointDir) ?? backend });
  const loaded = await loadRunCheckpoint(checkpointDir);
  try {
    const state = parseTrainerState(loaded.trainerState, checkpointDir);
    const steps = state.config.train.steps;
    if (state.step >= steps) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `--resume: the run in ${runDir} already finished all ${steps} steps`,
      );
    }
    return { checkpointDir, runDir, state, loaded };
  } catch (e) {
    release(loaded);
    throw e;
  }
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
