/**
 * Errors in OpenAI's shape: `{ "error": { "message", "type", "param", "code" } }` with the HTTP
 * status that goes with them.
 */

/** The body of every error response. */
export interface ErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: string;
    readonly param: string | null;
    readonly code: string | null;
  };
}

/** An error the API reports to the client. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: the request is malformed or asks for something this server does not do. */
export function invalidRequest(
  message: string,
  param: string | null = null,
  code: string | null = null,
): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

/** 401: missing or wrong API key. */
export function unauthorized(): ApiError {
  return new ApiError(
    401,
    'Incorrect or missing API key: send it as `Authorization: Bearer <key>`',
    'invalid_request_error',
    null,
    'invalid_api_key',
  );
}

/** 404: no such route or model. */
export function notFound(message: string, param: string | null = null, code = 'not_found'): ApiError {
  return new ApiError(404, message, 'invalid_request_error', param, code);
}

/** 413: the body is larger than the server accepts. */
export function tooLarge(limitBytes: number): ApiError {
  return new ApiError(
    413,
    `Request body too large: this server accepts at most ${limitBytes} bytes (--max-body-kb)`,
    'invalid_request_error',
    null,
    'request_too_large',
  );
}

/** 429: the queue is full; retry after `retryAfterS` seconds. */
export function queueFull(message: string, retryAfterS: number): ApiError {
  return new ApiError(429, `${message}; retry later`, 'rate_limit_error', null, 'queue_full', {
    'retry-after': String(retryAfterS),
  });
}

/** 503: the server is shutting down. */
export function unavailable(message: string): ApiError {
  return new ApiError(503, message, 'server_error', null, 'shutting_down');
}

/** 500: something failed inside the server. */
export function internalError(message: string): ApiError {
  return new ApiError(500, message, 'server_error', null, 'internal_error');
}
