/**
 * OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status
 * OpenAI uses (400 invalid request, 401 bad key, 404 unknown model, 413 body too large,
 * 429 overloaded (with Retry-After), 503 no engine, 500 otherwise).
 */
import { MicroserveError, type ErrorCode } from '../../../common/errors.ts';

export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error' | 'service_unavailable_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After on 429). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) => new ApiError(400, message, 'invalid_request_error', param, code);

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  BAD_REQUEST: 400,
  BAD_TOKEN: 400,
  BAD_GRAMMAR: 400,
  PROMPT_TOO_LONG: 400,
  NO_TOKENIZER: 400,
  UNAUTHORIZED: 401,
  OVERLOADED: 429,
  NO_ENGINE: 503,
  KV_PAGES_EXHAUSTED: 503,
};

/** Any thrown value as an ApiError (typed errors keep their code). */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof MicroserveError) {
    const status = STATUS_OF[e.code] ?? 500;
    const type: ApiErrorType =
      status === 400 ? 'invalid_request_error' : status === 429 ? 'rate_limit_error' : status === 503 ? 'service_unavailable_error' : status === 401 ? 'authentication_error' : 'server_error';
    const param = typeof e.info?.param === 'string' ? e.info.param : null;
    const headers: Record<string, string> = status === 429 ? { 'retry-after': String(Number(e.info?.retryAfterS) || 1) } : {};
    return new ApiError(status, e.message, type, param, e.code.toLowerCase(), headers);
  }
  return new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error');
}
