/**
 * The wire protocol's request bodies: JSON Schemas the HTTP layer validates against (types, ranges,
 * unknown fields) and the TypeScript types of what passes. Semantic checks that need better messages
 * than a schema gives (prompt shapes, unsupported values) are in ./requests.
 */

/** A JSON Schema (the subset used here). */
export type JsonSchema = Readonly<Record<string, unknown>>;

const nullable = (type: string | string[], extra: Record<string, unknown> = {}): JsonSchema => ({
  type: [...(Array.isArray(type) ? type : [type]), 'null'],
  ...extra,
});

/** Fields the completions and chat endpoints share. */
const samplingFields = {
  model: { type: 'string', minLength: 1 },
  max_tokens: nullable('integer', { minimum: 1 }),
  temperature: nullable('number', { minimum: 0, maximum: 2 }),
  top_p: nullable('number', { exclusiveMinimum: 0, maximum: 1 }),
  top_k: nullable('integer', { minimum: -1 }),
  n: nullable('integer', { minimum: 1, maximum: 16 }),
  stream: nullable('boolean'),
  stream_options: nullable('object', {
    properties: { include_usage: nullable('boolean') },
    additionalProperties: false,
  }),
  stop: nullable(['string', 'array'], { items: { type: 'string', minLength: 1 }, maxItems: 4 }),
  seed: nullable('integer'),
  presence_penalty: nullable('number', { minimum: -2, maximum: 2 }),
  frequency_penalty: nullable('number', { minimum: -2, maximum: 2 }),
  logit_bias: nullable('object'),
  user: { type: 'string' },
} as const;

/** POST /v1/completions. */
export const completionRequestSchema: JsonSchema = {
  type: 'object',
  required: ['model', 'prompt'],
  additionalProperties: false,
  properties: {
    ...samplingFields,
    prompt: { type: ['string', 'array'] },
    logprobs: nullable('integer', { minimum: 0, maximum: 5 }),
    echo: nullable('boolean'),
    best_of: nullable('integer', { minimum: 1 }),
    suffix: nullable('string'),
  },
};

/** POST /v1/chat/completions. */
export const chatRequestSchema: JsonSchema = {
  type: 'object',
  required: ['model', 'messages'],
  additionalProperties: false,
  properties: {
    ...samplingFields,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role', 'content'],
        additionalProperties: false,
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant'] },
          content: {
            type: ['string', 'array'],
            items: {
              type: 'object',
              required: ['type', 'text'],
              additionalProperties: false,
              properties: { type: { type: 'string', enum: ['text'] }, text: { type: 'string' } },
            },
          },
        },
      },
    },
    max_completion_tokens: nullable('integer', { minimum: 1 }),
    logprobs: nullable('boolean'),
    top_logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
  },
};

/** Fields of both bodies, as they arrive after schema validation. */
interface SamplingBody {
  model: string;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, unknown> | null;
  user?: string;
}

/** A completions body that passed the schema. */
export interface CompletionBody extends SamplingBody {
  prompt: string | unknown[];
  logprobs?: number | null;
  echo?: boolean | null;
  best_of?: number | null;
  suffix?: string | null;
}

/** A chat body that passed the schema. */
export interface ChatBody extends SamplingBody {
  messages: {
    role: 'system' | 'developer' | 'user' | 'assistant';
    content: string | { type: 'text'; text: string }[];
  }[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
}
