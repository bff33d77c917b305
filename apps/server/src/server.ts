/**
 * The HTTP server: fastify with the request schemas, OpenAI-shaped errors for every failure (bad
 * JSON, invalid UTF-8, oversized bodies, unknown routes, wrong API key), the routes, and a lifecycle
 * that drains on shutdown. The wire protocol lives in ./protocol, the handlers in ./serving, the
 * batching in ./engine.
 */
import { timingSafeEqual } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { type BpeTokenizer, END_OF_TEXT, loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import { SwitchyardError, tf } from '@switchyard/tensor';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { batchIndependentRouting, Engine, type EngineConfig } from './engine/engine';
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
import { type ChatTemplate, loadChatTemplate, PLAIN_CHAT_TEMPLATE } from './serving/chat-template';
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
};

/** A model ready to serve. */
export interface Servable {
  readonly model: MoETransformerLM;
  readonly tokenizer: BpeTokenizer;
  /** Default model id (the checkpoint folder's name). */
  readonly name: string;
  readonly chatTemplate: ChatTemplate;
  /** Where the chat template came from: `plain` or the file. */
  readonly chatTemplateSource: string;
}

/**
 * Loads a checkpoint folder for serving: the model, its tokenizer and chat template (its own
 * `chat_template.json`, else the plain one). Training-only tensors are released.
 *
 * @example
 * ```ts
 * const servable = await loadServable('runs/small/checkpoints/final');
 * ```
 */
export async function loadServable(dir: string): Promise<Servable> {
  const loaded = await loadCheckpoint(dir);
  tf.dispose(Object.values(loaded.extraTensors ?? {}));
  if (loaded.tokenizer.vocabSize > loaded.config.vocabSize) {
    loaded.model.dispose();
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `checkpoint ${dir}: the tokenizer has ${loaded.tokenizer.vocabSize} ids but the model only ${loaded.config.vocabSize}`,
    );
  }
  const { template, source } = await loadChatTemplate(dir);
  return {
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    name: basename(resolve(dir)),
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
  readonly engine: Engine;
  readonly metrics: ServerMetrics;
  /** Warnings about the model (e.g. routing that makes outputs depend on the batch). */
  readonly warnings: readonly string[];
  /**
   * Stops taking requests (503), lets running ones finish (cancelling them after the drain
   * timeout), then closes the listener. The model is not disposed.
   */
  shutdown(): Promise<void>;
}

/**
 * Starts serving `servable` over HTTP.
 *
 * @example
 * ```ts
 * const server = await startServer(await loadServable(dir), { port: 0 });
 * // ... requests to server.url ...
 * await server.shutdown();
 * ```
 */
export async function startServer(
  servable: Servable,
  options: Partial<ServeConfig> = {},
): Promise<RunningServer> {
  const config: ServeConfig = { ...defaultServeConfig, ...stripUndefined(options) };
  const { model, tokenizer } = servable;
  const modelName = config.modelName ?? servable.name;
  const maxSeqLen = model.config.maxSeqLen;
  const engineConfig: EngineConfig = {
    maxBatch: config.maxBatch,
    kvBudgetBytes: Math.floor(config.kvBudgetMb * 1024 * 1024),
    maxWaiting: config.maxWaiting,
    prefillChunk: config.prefillChunk,
    vocabLimit: tokenizer.vocabSize,
  };
  let engine: Engine | undefined;
  const metrics = new ServerMetrics(model, () => engine!.stats());
  engine = new Engine(model, engineConfig, metrics);
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
    chatTemplate: servable.chatTemplate ?? PLAIN_CHAT_TEMPLATE,
    retryAfterS: config.retryAfterS,
  };
  const warnings = batchIndependentRouting(model)
    ? []
    : [
        'the model routes with a capacity or by expert choice at inference: a request’s tokens can depend on the other requests in its batch',
      ];
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

  await app.listen({ host: config.host, port: config.port });
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
        await engine.drain(config.drainTimeoutS * 1000);
        await app.close();
        await engine.close();
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
