import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';

/**
 * The registry side of a cloud stand-in: a thin proxy on 127.0.0.1 in front of a real distribution registry
 * (which runs without auth). It adds what the cloud registry does and distribution does not:
 * - authentication: `basic` checks `Authorization: Basic user:password` with `checkCredentials`, as ECR
 *   does with its tokens, and returns ECR's 403 DENIED for an expired token; `bearer` runs a token service
 *   at `/v2/token` on the same origin, as Artifact Registry does, that trades Basic credentials for tokens;
 * - repositories that must exist: a request for a repository that `repositoryExists` rejects gets
 *   404 NAME_UNKNOWN.
 * Upload `Location` headers are rewritten from the backing registry's origin to the proxy's.
 */

export interface ProxyOptions {
  /** `http://127.0.0.1:PORT` of the backing registry. */
  backend: string;
  auth: 'basic' | 'bearer';
  /** Checks the Basic credentials of a request: 'valid', 'expired' (ECR's 403) or 'invalid' (401). */
  checkCredentials: (username: string, password: string, request: { method: string; path: string }) => 'valid' | 'expired' | 'invalid';
  /** Checks whether `repository` exists in the registry now. Default: every repository exists. */
  repositoryExists?: (repository: string) => boolean;
}

export interface ProxyRequest {
  method: string;
  path: string;
  status: number;
}

export interface RegistryProxy {
  /** `127.0.0.1:PORT` */
  host: string;
  /** Every request handled, in order, with its response status. */
  readonly log: ProxyRequest[];
  /** Registry tokens issued by the `bearer` token service. */
  readonly issuedTokens: string[];
  close(): Promise<void>;
}

const EXPIRED_BODY = JSON.stringify({ errors: [{ code: 'DENIED', message: 'Your authorization token has expired. Reauthenticate and try again.' }] });

export async function startRegistryProxy(options: ProxyOptions): Promise<RegistryProxy> {
  const backend = new URL(options.backend);
  const log: ProxyRequest[] = [];
  const issuedTokens: string[] = [];
  let origin = '';

  const answer = (request: IncomingMessage, response: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
    log.push({ method: request.method ?? '', path: request.url ?? '', status });
    request.resume();
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers }).end(body);
  };

  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', origin);
    const authorization = request.headers.authorization ?? '';

    if (options.auth === 'bearer' && url.pathname === '/v2/token') {
      const basic = parseBasic(authorization);
      const verdict = basic ? options.checkCredentials(basic.username, basic.password, { method: request.method ?? '', path: url.pathname }) : 'invalid';
      if (verdict !== 'valid') {
        answer(request, response, 401, JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'invalid credentials' }] }));
        return;
      }
      const token = randomBytes(16).toString('hex');
      issuedTokens.push(token);
      answer(request, response, 200, JSON.stringify({ token, expires_in: 300 }));
      return;
    }

    if (options.auth === 'basic') {
      const basic = parseBasic(authorization);
      if (!basic) {
        answer(request, response, 401, JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }), {
          'www-authenticate': `Basic realm="${origin}/",service="ecr.amazonaws.com"`,
        });
        return;
      }
      const verdict = options.checkCredentials(basic.username, basic.password, { method: request.method ?? '', path: url.pathname });
      if (verdict === 'expired') {
        answer(request, response, 403, EXPIRED_BODY);
        return;
      }
      if (verdict === 'invalid') {
        answer(request, response, 401, JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'invalid credentials' }] }), {
          'www-authenticate': `Basic realm="${origin}/",service="ecr.amazonaws.com"`,
        });
        return;
      }
    } else {
      const bearer = /^Bearer (.+)$/.exec(authorization)?.[1];
      if (!bearer || !issuedTokens.includes(bearer)) {
        answer(request, response, 401, JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }), {
          'www-authenticate': `Bearer realm="${origin}/v2/token",service="${url.host}"`,
        });
        return;
      }
    }

    const repository = /^\/v2\/(.+?)\/(?:manifests|blobs|tags)\//.exec(url.pathname)?.[1];
    if (repository !== undefined && options.repositoryExists && !options.repositoryExists(repository)) {
      answer(request, response, 404, JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: `The repository with name '${repository}' does not exist` }] }));
      return;
    }
    forward(request, response);
  });

  const forward = (request: IncomingMessage, response: ServerResponse) => {
    const headers = { ...request.headers };
    delete headers.authorization;
    headers.host = backend.host;
    const upstream = httpRequest({ host: backend.hostname, port: backend.port, method: request.method, path: request.url, headers }, (reply) => {
      log.push({ method: request.method ?? '', path: request.url ?? '', status: reply.statusCode ?? 0 });
      const replyHeaders = { ...reply.headers };
      if (typeof replyHeaders.location === 'string') replyHeaders.location = replyHeaders.location.replace(backend.origin, origin);
      response.writeHead(reply.statusCode ?? 502, replyHeaders);
      reply.pipe(response);
    });
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  };

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  origin = `http://127.0.0.1:${port}`;
  return {
    host: `127.0.0.1:${port}`,
    log,
    issuedTokens,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

function parseBasic(authorization: string): { username: string; password: string } | undefined {
  const encoded = /^Basic (.+)$/.exec(authorization)?.[1];
  if (!encoded) return undefined;
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
