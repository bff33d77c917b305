/**
 * The handlers of POST /v1/completions and POST /v1/chat/completions: parse the validated body,
 * tokenize and check the prompts against the context and the server's limits, run the generation,
 * and answer with one JSON object or a stream of server-sent events.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { EngineRefusal } from '../engine/engine';
import {
  ApiError,
  internalError,
  invalidRequest,
  notFound,
  queueFull,
  unavailable,
} from '../protocol/errors';
import {
  chatLogprobs,
  chatMaxTokens,
  chatMessages,
  completionLogprobs,
  completionPrompts,
  type PromptInput,
  type SamplingRequest,
  samplingRequest,
} from '../protocol/requests';
import {
  type ChoiceDelta,
  chatChunk,
  chatResponse,
  completionChunk,
  completionResponse,
  type ResponseHead,
  usage,
  usageChunk,
} from '../protocol/responses';
import type { ChatBody, CompletionBody } from '../protocol/schemas';
import { type ChatTemplate, renderChat } from './chat-template';
import { Generation, GenerationFailed, type GenerationSetup, type PreparedPrompt } from './generation';
import { SseWriter } from './sse';

/** Everything the handlers need from the server. */
export interface ServingContext extends GenerationSetup {
  /** The id clients name in `model`. */
  readonly modelName: string;
  readonly maxSeqLen: number;
  /** Token ids a prompt may hold: [0, vocabSize). */
  readonly vocabSize: number;
  /** Most tokens one request may ask for (--max-tokens). */
  readonly maxTokensLimit: number;
  /** Bytes of the longest token: a text of more than maxSeqLen * this bytes cannot fit. */
  readonly maxTokenBytes: number;
  readonly chatTemplate: ChatTemplate;
  /** Seconds a client refused with 429 is told to wait. */
  readonly retryAfterS: number;
}

/** The completions default when `max_tokens` is absent (OpenAI's). */
const COMPLETION_DEFAULT_MAX_TOKENS = 16;

/** POST /v1/completions. */
export async function completions(ctx: ServingContext, body: CompletionBody, reply: FastifyReply) {
  checkModel(ctx, body.model);
  const params = samplingRequest(body, body.max_tokens);
  const inputs = completionPrompts(body);
  const prompts = inputs.map((p, i) =>
    prepare(ctx, p, params, COMPLETION_DEFAULT_MAX_TOKENS, inputs.length > 1 ? `prompt[${i}]` : 'prompt'),
  );
  return run(ctx, 'completion', prompts, params, completionLogprobs(body), [], reply);
}

/** POST /v1/chat/completions. */
export async function chatCompletions(ctx: ServingContext, body: ChatBody, reply: FastifyReply) {
  checkModel(ctx, body.model);
  const params = samplingRequest(body, chatMaxTokens(body));
  const logprobs = chatLogprobs(body);
  const text = renderChat(ctx.chatTemplate, chatMessages(body));
  const prompt = prepare(ctx, { text }, params, undefined, 'messages');
  return run(ctx, 'chat', [prompt], params, logprobs, ctx.chatTemplate.stop, reply);
}

function checkModel(ctx: ServingContext, model: string): void {
  if (model !== ctx.modelName)
    throw notFound(
      `The model \`${model}\` does not exist; this server serves \`${ctx.modelName}\``,
      'model',
      'model_not_found',
    );
}

/**
 * Tokenizes one prompt and fixes its max tokens: the request's (at most --max-tokens), else the
 * default (`defaultMax`, or all the context left), so that prompt + max tokens fits in maxSeqLen.
 */
function prepare(
  ctx: ServingContext,
  input: PromptInput,
  params: SamplingRequest,
  defaultMax: number | undefined,
  param: string,
): PreparedPrompt {
  const contextError = (promptTokens: string, asked?: number) =>
    invalidRequest(
      `This model's maximum context length is ${ctx.maxSeqLen} tokens; ${param} has ${promptTokens} tokens` +
        (asked === undefined
          ? ', leaving no room to generate'
          : ` and ${asked} more were requested (max_tokens)`),
      asked === undefined ? param : 'max_tokens',
      'context_length_exceeded',
    );
  let ids: readonly number[];
  if ('text' in input) {
    const bytes = Buffer.byteLength(input.text, 'utf8');
    // Every token holds at most maxTokenBytes bytes: a longer text cannot fit, so it is not encoded.
    if (bytes > ctx.maxSeqLen * ctx.maxTokenBytes)
      throw contextError(`at least ${Math.ceil(bytes / ctx.maxTokenBytes)}`);
    ids = ctx.tokenizer.encode(input.text);
  } else {
    ids = input.ids;
    ids.forEach((id, i) => {
      if (id >= ctx.vocabSize)
        throw invalidRequest(
          `\`${param}[${i}]\` must be a token id below ${ctx.vocabSize}, got ${id}`,
          'prompt',
        );
    });
  }
  if (ids.length >= ctx.maxSeqLen) throw contextError(String(ids.length));
  const room = ctx.maxSeqLen - ids.length;
  if (params.maxTokens !== undefined) {
    if (params.maxTokens > ctx.maxTokensLimit)
      throw invalidRequest(
        `\`max_tokens\` must be at most ${ctx.maxTokensLimit} on this server, got ${params.maxTokens}`,
        'max_tokens',
      );
    if (params.maxTokens > room) throw contextError(String(ids.length), params.maxTokens);
  }
  const maxTokens = params.maxTokens ?? Math.min(defaultMax ?? room, room, ctx.maxTokensLimit);
  return { ids, maxTokens };
}

/** Runs the generation and answers, streaming or not. */
async function run(
  ctx: ServingContext,
  kind: 'completion' | 'chat',
  prompts: readonly PreparedPrompt[],
  params: SamplingRequest,
  logprobs: number | null,
  extraStops: readonly string[],
  reply: FastifyReply,
) {
  const head: ResponseHead = {
    id: `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`,
    created: Math.floor(Date.now() / 1000),
    model: ctx.modelName,
  };
  const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  let sse: SseWriter | undefined;
  const onDelta = params.stream
    ? (d: ChoiceDelta) =>
        sse?.send(
          kind === 'chat'
            ? chatChunk(head, d, params.includeUsage)
            : completionChunk(head, d, params.includeUsage),
        )
    : undefined;
  const gen = new Generation(ctx, prompts, params, logprobs, extraStops, onDelta);
  try {
    gen.start();
  } catch (e) {
    throw refusal(ctx, e);
  }
  // A client that goes away cancels its sequences, which frees their KV caches.
  reply.raw.on('close', () => {
    if (!reply.raw.writableEnded) gen.cancel();
  });
  if (!params.stream) {
    let choices: Awaited<typeof gen.done>;
    try {
      choices = await gen.done;
    } catch (e) {
      throw failed(e);
    }
    const u = usage(gen.promptTokens, gen.completionTokens);
    return kind === 'chat' ? chatResponse(head, choices, u) : completionResponse(head, choices, u);
  }
  reply.hijack();
  sse = new SseWriter(reply.raw);
  try {
    await gen.done;
    if (params.includeUsage)
      sse.send(usageChunk(head, object, usage(gen.promptTokens, gen.completionTokens)));
  } catch (e) {
    sse.send(failed(e).toBody());
  }
  sse.done();
  return reply;
}

/** The API error for a generation that did not complete: 503 when cancelled by a shutdown, else 500. */
function failed(e: unknown): ApiError {
  if (e instanceof GenerationFailed && e.cancelled) return unavailable(e.message);
  return internalError(`generation failed: ${(e as Error).message}`);
}

/** The API error for an engine that would not take a request. */
function refusal(ctx: ServingContext, e: unknown): ApiError {
  if (!(e instanceof EngineRefusal)) return e instanceof ApiError ? e : internalError(String(e));
  switch (e.reason) {
    case 'queue_full':
      return queueFull(e.message, ctx.retryAfterS);
    case 'too_large':
      return invalidRequest(`${e.message} (--kv-budget-mb); ask for fewer max_tokens`, 'max_tokens');
    default:
      return unavailable(e.message);
  }
}
