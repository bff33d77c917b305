/**
 * The HTTP server: fastify with the request schemas, OpenAI-shaped errors for every failure (bad
 * JSON, invalid UTF-8, oversized bodies, unknown routes, wrong API key), the routes, and a lifecycle
 * that drains on shutdown. The wire protocol lives in ./protocol, the handlers in ./serving, the
 * batching in ./engine.
 */
import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import {
  BpeTokenizer,
  CHECKPOINT_FILES,
  END_OF_TEXT,
  fromHfConfig,
  isMoELayer,
  type ModelConfig,
  type MoETransformerLM,
} from '@switchyard/model';
import { type BackendName, SwitchyardError } from '@switchyard/tensor';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { EngineClient } from './engine/client';
import {
  batchIndependentRouting,
  Engine,
  type EngineConfig,
  type EngineHandle,
  ROUTING_WARNING,
} from './engine/engine';
import { ServerMetrics } from './metrics';
import {
  ApiError,
  internalError,
  invalidRequest,
  notFound,
  tooLarge,
  unauthorized,
  unavailable,
} from './protocol/errors';
import {
  type ChatBody,
  type CompletionBody,
  chatRequestSchema,
  completionRequestSchema,
} from './protocol/schemas';
import { formatValidation } from './protocol/validation';
import { type ChatTemplate, loadChatTemplate } from './serving/chat-template';
import { chatCompletions, completions, type ServingContext } from './serving/endpoints';

/** Server settings; each has a command-line flag (see `switchyard-serve --help`). */
export interface ServeConfig {
  /** Interface to bind. */
  readonly host: string;
  /** Port to bind (0: any free port). */
  readonly port: number;
  /** When set, /v1/* requests must send `Authorization: Bearer <apiKey>`. */
  readonly apiKey: string | undefined;
  /** The model id clients send in `model` (default: the checkpoint folder's name). */
  readonly modelName: string | undefined;
  /** Most sequences in the running batch. */
  readonly maxBatch: number;
  /** KV-cache memory the running sequences may reserve, in MiB. */
  readonly kvBudgetMb: number;
  /** Most sequences waiting to join the batch; beyond it requests get 429. */
  readonly maxWaiting: number;
  /** Most prompt tokens prefilled per step. */
  readonly prefillChunk: number;
  /** Most tokens one request may ask for (default: the model's maxSeqLen). */
  readonly maxTokens: number | undefined;
  /** Largest request body, in KiB; larger bodies get 413. */
  readonly maxBodyKb: number;
  /** Seconds a shutdown waits for running requests before cancelling them. */
  readonly drainTimeoutS: number;
  /** Seconds a 429 asks the client to wait (Retry-After). */
  readonly retryAfterS: number;
  /** TensorFlow.js backend of the engine thread (default: the fastest that loads). */
  readonly backend: BackendName | undefined;
}

export const defaultServeConfig: ServeConfig = {
  host: '127.0.0.1',
  port: 8000,
  apiKey: undefined,
  modelName: undefined,
  maxBatch: 16,
  kvBudgetMb: 256,
  maxWaiting: 64,
  prefillChunk: 64,
  maxTokens: undefined,
  maxBodyKb: 256,
  drainTimeoutS: 30,
  retryAfterS: 1,
  backend: undefined,
};

/** A checkpoint ready to serve: what the HTTP side needs (the engine loads the weights). */
export interface Servable {
  /** The checkpoint folder. */
  readonly dir: string;
  /** Default model id (the checkpoint folder's name). */
  readonly name: string;
  readonly config: ModelConfig;
  readonly tokenizer: BpeTokenizer;
  readonly chatTemplate: ChatTemplate;
  /** Where the chat template came from: `plain` or the file. */
  readonly chatTemplateSource: string;
}

/**
 * Reads what serving a checkpoint folder needs besides the weights: its config, tokenizer and chat
 * template (its own `chat_template.json`, else the plain one). The engine loads and verifies the
 * weights when the server starts.
 *
 * @example
 * ```ts
 * const servable = await loadServable('runs/small/checkpoints/final');
 * ```
 */
export async function loadServable(dir: string): Promise<Servable> {
  const root = resolve(dir);
  const read = async (name: string) => {
    try {
      return await readFile(join(root, name), 'utf8');
    } catch (e) {
      throw new SwitchyardError(
        'CHECKPOINT_INVALID',
        `checkpoint ${root}: cannot read ${name} (${String(e)})`,
        {
          cause: e,
        },
      );
    }
  };
  let raw: unknown;
  try {
    raw = JSON.parse(await read(CHECKPOINT_FILES.config));
  } catch (e) {
    if (e instanceof SwitchyardError) throw e;
    throw new SwitchyardError('CHECKPOINT_INVALID', `checkpoint ${root}: config.json is not valid JSON`, {
      cause: e,
    });
  }
  const config = fromHfConfig(raw, join(root, CHECKPOINT_FILES.config));
  const tokenizer = BpeTokenizer.load(await read(CHECKPOINT_FILES.tokenizer));
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `checkpoint ${root}: the tokenizer has ${tokenizer.vocabSize} ids but the model only ${config.vocabSize}`,
    );
  }
  const { template, source } = await loadChatTemplate(root);
  return {
    dir: root,
    name: basename(root),
    config,
    tokenizer,
    chatTemplate: template,
    chatTemplateSource: source,
  };
}

/** A started server. */
export interface RunningServer {
  /** `http://host:port`. */
  readonly url: string;
  readonly port: number;
  readonly modelName: string;
  readonly app: FastifyInstance;
  /** The engine: an {@link EngineClient} to its own thread, or an {@link Engine} on this one. */
  readonly engine: EngineHandle;
  readonly metrics: ServerMetrics;
  /** Warnings about the model (e.g. routing that makes outputs depend on the batch). */
  readonly warnings: readonly string[];
  /**
   * Stops taking requests (503), lets running ones finish (cancelling them after the drain
   * timeout), then closes the listener and stops the engine (a model passed in is not disposed).
   */
  shutdown(): Promise<void>;
}

/** Options of {@link startServer}: the settings, and optionally a model to run on this thread. */
export interface StartOptions extends Partial<ServeConfig> {
  /**
   * Run the engine on this thread with this model (loaded by the caller and left to it) instead of
   * in a worker thread that loads the checkpoint. Model compute then blocks this thread's I/O
   * during each step.
   */
  readonly model?: MoETransformerLM;
}

/**
 * Starts serving `servable` over HTTP. By default the engine runs in a worker thread that loads the
 * checkpoint's weights, so HTTP is answered while a step computes.
 *
 * @example
 * ```ts
 * const server = await startServer(await loadServable(dir), { port: 0 });
 * // ... requests to server.url ...
 * await server.shutdown();
 * ```
 */
export async function startServer(servable: Servable, options: StartOptions = {}): Promise<RunningServer> {
  const { model, ...settings } = options;
  const config: ServeConfig = { ...defaultServeConfig, ...stripUndefined(settings) };
  const { tokenizer } = servable;
  const modelName = config.modelName ?? servable.name;
  const maxSeqLen = servable.config.maxSeqLen;
  const engineConfig: EngineConfig = {
    maxBatch: config.maxBatch,
    kvBudgetBytes: Math.floor(config.kvBudgetMb * 1024 * 1024),
    maxWaiting: config.maxWaiting,
    prefillChunk: config.prefillChunk,
    vocabLimit: tokenizer.vocabSize,
  };
  let engine: EngineHandle | undefined;
  const layers = Array.from({ length: servable.config.numLayers }, (_, l) => l).filter((l) =>
    isMoELayer(servable.config, l),
  );
  const metrics = new ServerMetrics(layers, servable.config.moe.experts.numExperts, () => engine!.stats());
  let warnings: readonly string[];
  if (model) {
    engine = new Engine(model, engineConfig, metrics);
    warnings = batchIndependentRouting(model) ? [] : [ROUTING_WARNING];
  } else {
    const client = await EngineClient.start(
      { checkpoint: servable.dir, backend: config.backend, config: engineConfig },
      servable.config,
      metrics,
    );
    engine = client;
    warnings = client.warnings;
  }
  const eot = tokenizer.specialTokens[END_OF_TEXT];
  let maxTokenBytes = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++)
    maxTokenBytes = Math.max(maxTokenBytes, tokenizer.tokenBytes(id).length);
  const ctx: ServingContext = {
    engine,
    tokenizer,
    stopTokenIds: eot === undefined ? [] : [eot],
    modelName,
    maxSeqLen,
    vocabSize: tokenizer.vocabSize,
    maxTokensLimit: config.maxTokens ?? maxSeqLen,
    maxTokenBytes,
    chatTemplate: servable.chatTemplate,
    retryAfterS: config.retryAfterS,
  };
  let draining = false;
  const bodyLimit = Math.floor(config.maxBodyKb * 1024);
  const app = Fastify({
    logger: false,
    bodyLimit,
    ajv: {
      customOptions: {
        coerceTypes: false,
        removeAdditional: false,
        useDefaults: false,
        allErrors: false,
        allowUnionTypes: true,
        verbose: true,
      },
    },
  });
  app.removeContentTypeParser('application/json');
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      done(invalidRequest('The request body is not valid UTF-8'), undefined);
      return;
    }
    if (text.trim() === '') {
      done(invalidRequest('The request body is empty; expected a JSON object'), undefined);
      return;
    }
    parseJson(req, text, (err, value) => {
      if (err) done(invalidRequest(`The request body is not valid JSON: ${err.message}`), undefined);
      else done(null, value);
    });
  });

  app.addHook('onRequest', async (req) => {
    engine.noteActivity();
    if (!req.url.startsWith('/v1/')) return;
    if (draining && req.method === 'POST') throw unavailable('The server is shutting down');
    if (config.apiKey !== undefined && !keyMatches(req.headers.authorization, config.apiKey))
      throw unauthorized();
  });
  app.addHook('onResponse', async (req, reply) => {
    metrics.request(req.routeOptions.url ?? 'unknown', reply.statusCode);
  });
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    const api = toApiError(err, bodyLimit);
    reply.headers(api.headers);
    return reply.code(api.status).send(api.toBody());
  });
  app.setNotFoundHandler((req, reply) => {
    const api = notFound(`No route ${req.method} ${req.url.split('?')[0]}`);
    return reply.code(404).send(api.toBody());
  });

  app.get('/health', async (_req, reply) => {
    const failure = engine!.stats().failure;
    if (failure !== undefined) return reply.code(503).send({ status: 'failed', error: failure });
    if (draining) return reply.code(503).send({ status: 'draining' });
    return { status: 'ok' };
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  const created = Math.floor(Date.now() / 1000);
  const modelCard = {
    id: modelName,
    object: 'model',
    created,
    owned_by: 'switchyard',
    max_model_len: maxSeqLen,
  };
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard] }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (req) => {
    if (req.params.model !== modelName)
      throw notFound(`The model \`${req.params.model}\` does not exist`, 'model', 'model_not_found');
    return modelCard;
  });
  app.get('/v1/experts', async () => metrics.expertLoads());
  app.post<{ Body: CompletionBody }>(
    '/v1/completions',
    { schema: { body: completionRequestSchema } },
    (req, reply) => completions(ctx, req.body, reply),
  );
  app.post<{ Body: ChatBody }>(
    '/v1/chat/completions',
    { schema: { body: chatRequestSchema } },
    (req, reply) => chatCompletions(ctx, req.body, reply),
  );

  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (e) {
    await engine.close();
    throw e;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let shuttingDown: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    modelName,
    app,
    engine,
    metrics,
    warnings,
    shutdown() {
      shuttingDown ??= (async () => {
        draining = true;
        await engine!.drain(config.drainTimeoutS * 1000);
        await app.close();
        await engine!.close();
      })();
      return shuttingDown;
    },
  };
}

/** Constant-time check of `Authorization: Bearer <key>`. */
function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const got = Buffer.from(m[1]!);
  const want = Buffer.from(key);
  return got.length === want.length && timingSafeEqual(got, want);
}

/** Any failure as an API error (OpenAI's shape and status). */
function toApiError(err: FastifyError, bodyLimit: number): ApiError {
  if (err instanceof ApiError) return err;
  if (err.validation) return formatValidation(err.validation);
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return tooLarge(bodyLimit);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(
        415,
        'Unsupported Content-Type: send the body as application/json',
        'invalid_request_error',
        null,
        'unsupported_media_type',
      );
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return invalidRequest('The request body is empty; expected a JSON object');
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500)
    return new ApiError(err.statusCode, err.message, 'invalid_request_error');
  return internalError(`Internal error: ${err.message}`);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
