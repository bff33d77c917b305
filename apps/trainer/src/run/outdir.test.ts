import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  checkOutDirFree,
  checkpointName,
  checkpointStep,
  defaultOutDir,
  listCheckpoints,
  resolveResume,
  resumeCandidates,
} from './outdir';

function fakeCheckpoint(dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'manifest.json'), '{}');
}

describe('output folders', () => {
  const root = mkdtempSync(join(tmpdir(), 'sy-out-'));

  it('names runs and checkpoints', () => {
    expect(defaultOutDir('', 'small', new Date(2025, 0, 2, 3, 4, 5))).toMatch(/runs\/small-20250102-030405$/);
    expect(defaultOutDir('x/y', 'small')).toMatch(/\/x\/y$/);
    expect(checkpointName(42)).toBe('step-000042');
    expect(checkpointStep('step-000042')).toBe(42);
    expect(checkpointStep('final')).toBeUndefined();
  });

  it('accepts an absent or empty folder and refuses anything else', () => {
    expect(() => checkOutDirFree(join(root, 'absent'))).not.toThrow();
    mkdirSync(join(root, 'empty'));
    expect(() => checkOutDirFree(join(root, 'empty'))).not.toThrow();
    mkdirSync(join(root, 'other'));
    writeFileSync(join(root, 'other', 'run.json'), '{}');
    expect(() => checkOutDirFree(join(root, 'other'))).toThrow(
      /holds another run \(run\.json\); continue it with --resume/,
    );
    mkdirSync(join(root, 'busy'));
    writeFileSync(join(root, 'busy', 'notes.txt'), 'x');
    expect(() => checkOutDirFree(join(root, 'busy'))).toThrow(/is not empty/);
    expect(() => checkOutDirFree(join(root, 'busy', 'notes.txt'))).toThrow(/is a file/);
  });

  it('resolves --resume to the final, else the latest checkpoint of a run', () => {
    const run = join(root, 'run');
    mkdirSync(run);
    writeFileSync(join(run, 'run.json'), '{}');
    expect(() => resolveResume(run)).toThrow(/holds no checkpoint yet/);
    fakeCheckpoint(join(run, 'checkpoints', 'step-000010'));
    fakeCheckpoint(join(run, 'checkpoints', 'step-000020'));
    expect(listCheckpoints(run).map((c) => c.step)).toEqual([10, 20]);
    expect(resolveResume(run)).toEqual({
      checkpointDir: join(run, 'checkpoints', 'step-000020'),
      runDir: run,
    });
    fakeCheckpoint(join(run, 'checkpoints', 'final'));
    expect(resolveResume(run).checkpointDir).toBe(join(run, 'checkpoints', 'final'));
    expect(resolveResume(join(run, 'checkpoints', 'step-000010')).runDir).toBe(run);
  });

  it("lists a run folder's checkpoints newest step first, an extended run's periodic ones before its old final", () => {
    const run = join(root, 'extended');
    mkdirSync(run);
    writeFileSync(join(run, 'run.json'), '{}');
    for (const [name, step] of [
      ['step-000010', 10],
      ['final', 20],
      ['step-000020', 20],
      ['step-000030', 30],
    ] as const) {
      fakeCheckpoint(join(run, 'checkpoints', name));
      writeFileSync(join(run, 'checkpoints', name, 'trainer_state.json'), JSON.stringify({ step }));
    }
    const c = resumeCandidates(run);
    expect(c.named).toBe(false);
    expect(c.checkpoints.map((d) => d.split('/').pop())).toEqual([
      'step-000030',
      'final',
      'step-000020',
      'step-000010',
    ]);
    expect(resumeCandidates(join(run, 'checkpoints', 'step-000010'))).toEqual({
      runDir: run,
      checkpoints: [join(run, 'checkpoints', 'step-000010')],
      named: true,
    });
  });

  it('refuses a folder that is neither a run nor a checkpoint inside one', () => {
    expect(() => resolveResume(join(root, 'nowhere'))).toThrow(/does not exist/);
    expect(() => resolveResume(join(root, 'empty'))).toThrow(/neither a checkpoint folder/);
    fakeCheckpoint(join(root, 'loose'));
    expect(() => resolveResume(join(root, 'loose'))).toThrow(/is not inside a run folder/);
  });
});
