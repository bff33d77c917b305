/**
 * Chat templates: how a list of messages becomes the prompt text a base model continues, and which
 * strings end the assistant's turn. The plain template is the default; a checkpoint may carry its
 * own as `chat_template.json` next to `config.json`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SwitchyardError } from '@switchyard/tensor';
import { z } from 'zod';
import type { ChatMessage } from '../protocol/requests';

/** A chat template. `{content}` in a message template is replaced by the message's text. */
export interface ChatTemplate {
  /** Text before the first message (e.g. a beginning-of-sequence marker). */
  readonly prefix: string;
  /** Per role, the message's text with `{content}` where the content goes. */
  readonly messages: Readonly<Record<'system' | 'user' | 'assistant', string>>;
  /** Text after the last message that opens the assistant's turn. */
  readonly generationPrompt: string;
  /** Strings that end the assistant's turn (added to the request's own `stop`). */
  readonly stop: readonly string[];
}

/**
 * The plain template for base models: one line per message, `System: `, `User: ` or `Assistant: `
 * and the text, then `Assistant:` for the model to continue. The turn ends where the model starts a
 * new `User:` or `System:` line.
 */
export const PLAIN_CHAT_TEMPLATE: ChatTemplate = {
  prefix: '',
  messages: {
    system: 'System: {content}\n',
    user: 'User: {content}\n',
    assistant: 'Assistant: {content}\n',
  },
  generationPrompt: 'Assistant:',
  stop: ['\nUser:', '\nSystem:'],
};

/** File name of a checkpoint's own template. */
export const CHAT_TEMPLATE_FILE = 'chat_template.json';

const withContent = z.string().refine((s) => s.includes('{content}'), { message: 'must contain {content}' });

const templateSchema = z.strictObject({
  prefix: z.string().default(''),
  messages: z.strictObject({ system: withContent, user: withContent, assistant: withContent }),
  generationPrompt: z.string(),
  stop: z.array(z.string().min(1)).max(4).default([]),
});

/** The prompt text of `messages` under `template`. */
export function renderChat(template: ChatTemplate, messages: readonly ChatMessage[]): string {
  let text = template.prefix;
  for (const m of messages) {
    const role = m.role === 'developer' ? 'system' : m.role;
    // A function replacement: `$` sequences in the content stay literal.
    text += template.messages[role].replace('{content}', () => m.content);
  }
  return text + template.generationPrompt;
}

/**
 * The template of the checkpoint in `dir`: its `chat_template.json` when present (validated, every
 * problem reported), else {@link PLAIN_CHAT_TEMPLATE}.
 */
export async function loadChatTemplate(dir: string): Promise<{ template: ChatTemplate; source: string }> {
  const path = join(dir, CHAT_TEMPLATE_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      return { template: PLAIN_CHAT_TEMPLATE, source: 'plain' };
    throw new SwitchyardError('IO_ERROR', `cannot read ${path}: ${String(e)}`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SwitchyardError('CONFIG_INVALID', `${path} is not valid JSON: ${String(e)}`, { cause: e });
  }
  const parsed = templateSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new SwitchyardError('CONFIG_INVALID', `${path} is not a chat template:\n${problems.join('\n')}`);
  }
  return { template: parsed.data, source: path };
}
