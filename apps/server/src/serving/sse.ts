/**
 * Server-sent events for streamed responses: `text/event-stream`, one `data: {json}` event per
 * chunk, and `data: [DONE]` at the end.
 */
import type { ServerResponse } from 'node:http';

export class SseWriter {
  private ended = false;

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
  }

  /** Whether the client is still there to read. */
  get open(): boolean {
    return !this.ended && !this.res.destroyed && !this.res.writableEnded;
  }

  /** Sends one event holding `data` as JSON. */
  send(data: unknown): void {
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Sends `data: [DONE]` and ends the response. */
  done(): void {
    if (!this.open) return;
    this.ended = true;
    this.res.end('data: [DONE]\n\n');
  }
}
