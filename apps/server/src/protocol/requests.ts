/**
 * From validated request bodies to what the server generates: prompts, chat messages and sampling
 * parameters, with the checks a JSON Schema cannot phrase well (prompt shapes, values this server
 * does not support). Every refusal is a 400 naming the field.
 */
import { invalidRequest } from './errors';
import type { ChatBody, CompletionBody } from './schemas';

/** One chat message after parsing: a role (`developer` is rendered like `system`) and its text. */
export interface ChatMessage {
  readonly role: 'system' | 'developer' | 'user' | 'assistant';
  readonly content: string;
}

/** Sampling and output parameters shared by both endpoints. */
export interface SamplingRequest {
  /** Choices per prompt. */
  readonly n: number;
  /** The request's max_tokens (or max_completion_tokens), when given. */
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number;
  /** 0: no top-k limit. */
  readonly topK: number;
  /** The request's seed reduced to 32 bits, when given. */
  readonly seed: number | undefined;
  readonly stop: readonly string[];
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

/** A completions prompt: text, or token ids given directly. */
export type PromptInput = { readonly text: string } | { readonly ids: readonly number[] };

/** The sampling parameters of either body. */
export function samplingRequest(
  body: CompletionBody | ChatBody,
  maxTokens: number | null | undefined,
): SamplingRequest {
  if (body.presence_penalty) throw unsupported('presence_penalty', 'only 0');
  if (body.frequency_penalty) throw unsupported('frequency_penalty', 'only 0');
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) throw unsupported('logit_bias', 'only {}');
  const stream = body.stream === true;
  if (body.stream_options != null && !stream)
    throw invalidRequest('`stream_options` is only allowed when `stream` is true', 'stream_options');
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  if (stop.some((s) => s === '')) throw invalidRequest('`stop` strings must not be empty', 'stop');
  return {
    n: body.n ?? 1,
    maxTokens: maxTokens ?? undefined,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k == null || body.top_k < 0 ? 0 : body.top_k,
    seed: body.seed == null ? undefined : Number(BigInt.asUintN(32, BigInt(body.seed))),
    stop,
    stream,
    includeUsage: body.stream_options?.include_usage === true,
  };
}

/** The prompts of a completions body: a string, strings, token ids, or lists of token ids. */
export function completionPrompts(body: CompletionBody): PromptInput[] {
  if (body.echo) throw unsupported('echo', 'only false');
  if (body.suffix) throw unsupported('suffix', 'only null or ""');
  if (body.best_of != null && body.best_of !== (body.n ?? 1))
    throw unsupported('best_of', 'only equal to n (no server-side best-of selection)');
  const p = body.prompt;
  const bad = () =>
    invalidRequest(
      '`prompt` must be a non-empty string, a non-empty array of non-empty strings, an array of token ids, or an array of such arrays',
      'prompt',
    );
  if (typeof p === 'string') {
    if (p === '') throw invalidRequest('`prompt` must not be empty', 'prompt');
    return [{ text: p }];
  }
  if (p.length === 0) throw bad();
  if (p.every((x) => typeof x === 'string')) {
    p.forEach((x, i) => {
      if (x === '') throw invalidRequest(`\`prompt[${i}]\` must not be empty`, 'prompt');
    });
    return (p as string[]).map((text) => ({ text }));
  }
  if (p.every((x) => typeof x === 'number')) return [{ ids: checkIds(p as number[], 'prompt') }];
  if (p.every((x) => Array.isArray(x))) {
    return (p as unknown[][]).map((ids, i) => {
      if (ids.length === 0 || !ids.every((x) => typeof x === 'number')) throw bad();
      return { ids: checkIds(ids as number[], `prompt[${i}]`) };
    });
  }
  throw bad();
}

/** Completions `logprobs`: how many alternatives per token (0-5), or null for none. */
export function completionLogprobs(body: CompletionBody): number | null {
  return body.logprobs ?? null;
}

/** The messages of a chat body, each content as one string. */
export function chatMessages(body: ChatBody): ChatMessage[] {
  return body.messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((part) => part.text).join(''),
  }));
}

/** Chat `logprobs` / `top_logprobs`: alternatives per token, or null for none. */
export function chatLogprobs(body: ChatBody): number | null {
  if (body.top_logprobs != null && body.logprobs !== true)
    throw invalidRequest('`top_logprobs` needs `logprobs: true`', 'top_logprobs');
  return body.logprobs === true ? (body.top_logprobs ?? 0) : null;
}

/** max_tokens or its newer name max_completion_tokens (not both). */
export function chatMaxTokens(body: ChatBody): number | null | undefined {
  if (body.max_tokens != null && body.max_completion_tokens != null)
    throw invalidRequest('give `max_tokens` or `max_completion_tokens`, not both', 'max_completion_tokens');
  return body.max_completion_tokens ?? body.max_tokens;
}

function checkIds(ids: readonly number[], param: string): number[] {
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0)
      throw invalidRequest(`\`${param}[${i}]\` must be a token id (an integer >= 0), got ${id}`, 'prompt');
  });
  return [...ids];
}

function unsupported(param: string, what: string) {
  return invalidRequest(
    `\`${param}\` is not supported by this server (${what})`,
    param,
    'unsupported_parameter',
  );
}
