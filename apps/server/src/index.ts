/**
 * switchyard-serve: an OpenAI-compatible HTTP inference server for Switchyard MoE checkpoints, with
 * continuous batching, a KV cache per sequence within a memory budget, chunked prefill, SSE
 * streaming and Prometheus metrics. The command line (`switchyard-serve`) wraps these functions.
 *
 * @packageDocumentation
 */
export { EngineClient } from './engine/client';
export type {
  EngineConfig,
  EngineHandle,
  EngineObserver,
  EngineStats,
  RefusalReason,
  StepInfo,
} from './engine/engine';
export { batchIndependentRouting, Engine, EngineRefusal, kvBytesPerPosition } from './engine/engine';
export type { FinishReason, SequenceHandle, SequenceSink, SequenceSpec, TokenEvent } from './engine/sequence';
export type { FlagDoc } from './flags';
export { GENERATE_FLAGS, helpText, SERVE_FLAGS } from './flags';
export type { CliIO, MainOptions } from './main';
export { main, version } from './main';
export { ServerMetrics } from './metrics';
export type { ErrorBody } from './protocol/errors';
export { ApiError } from './protocol/errors';
export type { ChatMessage } from './protocol/requests';
export type { RunningServer, Servable, ServeConfig, StartOptions } from './server';
export { defaultServeConfig, loadServable, startServer } from './server';
export type { ChatTemplate } from './serving/chat-template';
export {
  CHAT_TEMPLATE_FILE,
  loadChatTemplate,
  PLAIN_CHAT_TEMPLATE,
  renderChat,
} from './serving/chat-template';
