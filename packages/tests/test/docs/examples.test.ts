// Every TypeScript code block of the docs (docs/**/*.md, ```ts fences) is a complete module that
// typechecks as a user's project would compile it (strict), and runs: in a fresh working folder,
// with its imports bound to the workspace packages, releasing every tensor it creates. A fence
// `ts no-run` is typechecked only (for examples that need several ranks or processes). A broken
// example fails here, named by page and line.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as balance from '@switchyard/balance';
import * as compress from '@switchyard/compress';
import * as experts from '@switchyard/experts';
import * as model from '@switchyard/model';
import * as parallel from '@switchyard/parallel';
import * as plan from '@switchyard/plan';
import * as routing from '@switchyard/routing';
import * as tensor from '@switchyard/tensor';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const docsRoot = join(here, '../../../../docs');
const testsRoot = join(here, '../..');

/** What doc examples may import besides Node's built-in modules. */
const MODULES: Record<string, unknown> = {
  '@switchyard/balance': balance,
  '@switchyard/compress': compress,
  '@switchyard/experts': experts,
  '@switchyard/model': model,
  '@switchyard/parallel': parallel,
  '@switchyard/plan': plan,
  '@switchyard/routing': routing,
  '@switchyard/tensor': tensor,
};

/** One ```ts block of a page. */
interface Example {
  /** Page path under docs/, e.g. `guide/moe-layer.md`. */
  readonly page: string;
  /** Line of the block's first code line in the page (1-based). */
  readonly line: number;
  readonly code: string;
  readonly run: boolean;
  /** Where the typechecker sees it (a file that does not exist on disk). */
  readonly virtualPath: string;
}

function pages(dir = docsRoot): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        return ['api', 'node_modules', 'public', '.vitepress'].includes(name) ? [] : pages(path);
      }
      return name.endsWith('.md') ? [path] : [];
    });
}

function examples(): Example[] {
  const out: Example[] = [];
  for (const file of pages()) {
    const page = relative(docsRoot, file);
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const fence = /^```(ts|typescript)(?:\s+(.*))?$/.exec(lines[i]!);
      if (!fence) continue;
      const end = lines.indexOf('```', i + 1);
      expect(end, `${page}:${i + 1}: an unclosed code fence`).toBeGreaterThan(i);
      const meta = (fence[2] ?? '').split(/\s+/);
      out.push({
        page,
        line: i + 2,
        code: lines.slice(i + 1, end).join('\n'),
        run: !meta.includes('no-run'),
        virtualPath: join(testsRoot, '.doc-examples', `${page.replace(/[/.]/g, '_')}_L${i + 2}.ts`),
      });
      i = end;
    }
  }
  return out;
}

const all = examples();

/** The strict settings a user's project would compile the examples with; each block is its own module. */
const COMPILER_OPTIONS: ts.CompilerOptions = {
  strict: true,
  target: ts.ScriptTarget.ES2022,
  lib: ['lib.es2023.d.ts'],
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  moduleDetection: ts.ModuleDetectionKind.Force,
  customConditions: ['@switchyard/source'],
  types: ['node'],
  skipLibCheck: true,
  noEmit: true,
  esModuleInterop: true,
  allowImportingTsExtensions: true,
};

/** Type errors of every example, as `page:line: message`. */
function typeErrors(list: readonly Example[]): string[] {
  const byPath = new Map(list.map((e) => [e.virtualPath, e]));
  const host = ts.createCompilerHost(COMPILER_OPTIONS, true);
  const { getSourceFile, fileExists, readFile } = host;
  host.fileExists = (f) => byPath.has(f) || fileExists.call(host, f);
  host.readFile = (f) => byPath.get(f)?.code ?? readFile.call(host, f);
  host.getSourceFile = (f, lang, ...rest) => {
    const e = byPath.get(f);
    return e ? ts.createSourceFile(f, e.code, lang, true) : getSourceFile.call(host, f, lang, ...rest);
  };
  host.getCurrentDirectory = () => testsRoot;
  const program = ts.createProgram([...byPath.keys()], COMPILER_OPTIONS, host);
  // Only the examples' own diagnostics: the packages they import are typechecked with their sources.
  return [...byPath.keys()]
    .map((path) => program.getSourceFile(path)!)
    .flatMap((sf) => [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)])
    .map((d) => {
      const e = byPath.get(d.file!.fileName)!;
      const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
      return `docs/${e.page}:${e.line + line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
}

/** Files an example reads, written into its working folder first. */
const FIXTURES: Record<string, (cwd: string) => Promise<void> | void> = {
  'guide/generate.md': saveTinyCheckpoint,
  'guide/model-configuration.md': writeCorpus,
  'guide/model-tokenizer.md': writeCorpus,
};

const CORPUS = [
  'The jury said it did find that many of the laws are outmoded.',
  'The cat sat on the mat, and the dog sat on the rug.',
  'It was a bright cold day in April, and the clocks were striking thirteen.',
].join('\n');

function writeCorpus(cwd: string): void {
  writeFileSync(join(cwd, 'corpus.txt'), CORPUS.repeat(20));
}

/** A tiny model and tokenizer saved where the generation guide loads them. */
async function saveTinyCheckpoint(cwd: string): Promise<void> {
  const tokenizer = model.BpeTokenizer.train({ texts: [CORPUS] }, { vocabSize: 300 });
  const config = model.defineModelConfig({ vocabSize: tokenizer.vocabSize }, model.presets.tiny);
  const lm = new model.MoETransformerLM(config, new tensor.Rng(0));
  const dir = join(cwd, 'runs', 'tiny', 'checkpoints');
  mkdirSync(dir, { recursive: true });
  await model.saveCheckpoint(join(dir, 'final'), { model: lm, tokenizer });
  lm.dispose();
}

const nodeRequire = createRequire(import.meta.url);

/**
 * Runs one example: transpiled to CommonJS, its imports bound to {@link MODULES} (or Node's
 * built-ins), `console.log` collected; checks that it releases every tensor it creates.
 */
async function runExample(e: Example): Promise<unknown[][]> {
  const js = ts.transpileModule(e.code, {
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      esModuleInterop: true,
    },
  }).outputText;
  const logged: unknown[][] = [];
  const require = (name: string): unknown => {
    if (name in MODULES) return MODULES[name];
    if (name.startsWith('node:')) return nodeRequire(name);
    throw new Error(
      `docs/${e.page}:${e.line}: imports ${name}; examples may import ${Object.keys(MODULES).join(', ')} and node: modules`,
    );
  };
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
    ...args: string[]
  ) => (...a: unknown[]) => Promise<void>;
  const body = new AsyncFunction('require', 'exports', 'module', 'console', js);
  const exportsObject = {};
  const log = (...a: unknown[]) => logged.push(a);
  await tensor.expectNoLeaks(
    () => body(require, exportsObject, { exports: exportsObject }, { log, info: log, warn: log }),
    `docs/${e.page}:${e.line}`,
  );
  return logged;
}

describe('docs code examples', () => {
  const startDir = process.cwd();
  const workRoot = mkdtempSync(join(tmpdir(), 'switchyard-docs-'));
  afterAll(() => {
    process.chdir(startDir);
    rmSync(workRoot, { recursive: true, force: true });
  });

  it('finds the examples of every page', () => {
    expect(all.length).toBeGreaterThan(30);
    expect(new Set(all.map((e) => e.page))).toContain('guide/moe-layer.md');
  });

  // Types do not depend on the tensor backend: checked once, in the wasm pass.
  it.skipIf(process.env.SWITCHYARD_BACKEND === 'cpu')(
    'typecheck (strict)',
    () => {
      expect(typeErrors(all)).toEqual([]);
    },
    120_000,
  );

  // The examples are end-to-end usage: run once, on wasm; the packages' own tests cover both backends.
  describe
    .skipIf(process.env.SWITCHYARD_BACKEND === 'cpu')
    .each([...new Set(all.filter((e) => e.run).map((e) => e.page))])('%s', (page) => {
    const cwd = join(workRoot, page.replace(/[/.]/g, '_'));
    beforeAll(async () => {
      mkdirSync(cwd, { recursive: true });
      process.chdir(cwd);
      await FIXTURES[page]?.(cwd);
    });
    it.each(all.filter((e) => e.page === page && e.run).map((e) => [e.line, e] as const))(
      'runs the example at line %i',
      async (_line, e) => {
        process.chdir(cwd);
        await runExample(e);
      },
    );
  });
});
