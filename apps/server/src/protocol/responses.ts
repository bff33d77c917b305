/**
 * The wire protocol's responses: completion and chat objects, their streaming chunks, usage and
 * the two logprobs layouts (completions: parallel lists; chat: one entry per token).
 */

/** Why a choice ended, as the API reports it. */
export type WireFinishReason = 'stop' | 'length';

/** Token counts of a request. */
export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
}

/** One candidate token: its text, exact bytes and log-probability. */
export interface TokenAlternative {
  readonly text: string;
  readonly bytes: readonly number[];
  readonly logprob: number;
}

/** One generated token with its log-probability and the most likely alternatives. */
export interface TokenInfo extends TokenAlternative {
  readonly top: readonly TokenAlternative[];
}

export function usage(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

/** Completions logprobs: tokens, their logprobs, top alternatives and each token's offset in the text. */
export function completionLogprobs(tokens: readonly TokenInfo[], textOffset: number, withTop: boolean) {
  const offsets: number[] = [];
  let at = textOffset;
  for (const t of tokens) {
    offsets.push(at);
    at += t.text.length;
  }
  return {
    tokens: tokens.map((t) => t.text),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: withTop
      ? tokens.map((t) => Object.fromEntries(t.top.map((a) => [a.text, a.logprob])))
      : null,
    text_offset: offsets,
  };
}

/** Chat logprobs: one entry per token with its bytes and top alternatives. */
export function chatLogprobs(tokens: readonly TokenInfo[]) {
  return {
    content: tokens.map((t) => ({
      token: t.text,
      logprob: t.logprob,
      bytes: [...t.bytes],
      top_logprobs: t.top.map((a) => ({ token: a.text, logprob: a.logprob, bytes: [...a.bytes] })),
    })),
    refusal: null,
  };
}

/** What every response and chunk starts with. */
export interface ResponseHead {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

/** A finished choice of either endpoint. */
export interface ChoiceResult {
  readonly index: number;
  readonly text: string;
  readonly finishReason: WireFinishReason;
  readonly tokens: readonly TokenInfo[] | null;
  readonly withTop: boolean;
}

/** The fields every response and chunk starts with. */
function envelope(head: ResponseHead, object: string) {
  return { id: head.id, object, created: head.created, model: head.model };
}

export function completionResponse(head: ResponseHead, choices: readonly ChoiceResult[], u: Usage) {
  return {
    ...envelope(head, 'text_completion'),
    choices: choices.map((c) => ({
      index: c.index,
      text: c.text,
      logprobs: c.tokens ? completionLogprobs(c.tokens, 0, c.withTop) : null,
      finish_reason: c.finishReason,
    })),
    usage: u,
  };
}

export function chatResponse(head: ResponseHead, choices: readonly ChoiceResult[], u: Usage) {
  return {
    ...envelope(head, 'chat.completion'),
    choices: choices.map((c) => ({
      index: c.index,
      message: { role: 'assistant', content: c.text, refusal: null },
      logprobs: c.tokens ? chatLogprobs(c.tokens) : null,
      finish_reason: c.finishReason,
    })),
    usage: u,
  };
}

/** A piece of one choice for a streaming chunk. */
export interface ChoiceDelta {
  readonly index: number;
  readonly text: string;
  readonly tokens: readonly TokenInfo[] | null;
  /** Characters of this choice streamed before this piece (completions text_offset). */
  readonly textOffset: number;
  readonly withTop: boolean;
  readonly finishReason: WireFinishReason | null;
  /** First chunk of a chat choice (carries the role). */
  readonly first: boolean;
}

export function completionChunk(head: ResponseHead, d: ChoiceDelta, includeUsage: boolean) {
  return {
    ...envelope(head, 'text_completion'),
    choices: [
      {
        index: d.index,
        text: d.text,
        logprobs: d.tokens ? completionLogprobs(d.tokens, d.textOffset, d.withTop) : null,
        finish_reason: d.finishReason,
      },
    ],
    ...(includeUsage ? { usage: null } : {}),
  };
}

export function chatChunk(head: ResponseHead, d: ChoiceDelta, includeUsage: boolean) {
  const delta: { role?: 'assistant'; content?: string } = {};
  if (d.first) delta.role = 'assistant';
  if (d.text !== '' || d.first) delta.content = d.text;
  return {
    ...envelope(head, 'chat.completion.chunk'),
    choices: [
      {
        index: d.index,
        delta,
        logprobs: d.tokens ? chatLogprobs(d.tokens) : null,
        finish_reason: d.finishReason,
      },
    ],
    ...(includeUsage ? { usage: null } : {}),
  };
}

/** The last chunk when `stream_options.include_usage` is set: no choices, the usage. */
export function usageChunk(head: ResponseHead, object: string, u: Usage) {
  return { ...envelope(head, object), choices: [], usage: u };
}
