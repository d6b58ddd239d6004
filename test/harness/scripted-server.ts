import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { onTestFinished } from 'vitest';

/**
 * A scripted HTTP server on 127.0.0.1 for registry behaviour that no local registry shows (a 429, a
 * broken Location, a connection reset at a chosen moment). It responds only to the requests a test
 * declares. The test fails when any other request arrives or a declared one never comes, which is why
 * `startScriptedServer` must be called inside a test: it checks both when the test finishes.
 */

export interface ScriptedRequest {
  method: string;
  /** Path and query string exactly as sent, such as `/v2/app/blobs/uploads/1?_state=abc`. */
  path: string;
  headers: IncomingHttpHeaders;
  /** Header names and values in the order sent, repeated headers included. */
  rawHeaders: string[];
  body: Buffer;
}

export type ScriptedReply =
  | {
      status: number;
      headers?: Record<string, string | string[]>;
      /** A string or bytes as they are, or any other value as JSON. */
      body?: unknown;
      /** Sends the headers and this many bytes of the body, then destroys the connection. */
      breakAfterBytes?: number;
    }
  /** Destroys the connection without a response, as a reset or a crashed server does. */
  | { reset: true };

export interface Expectation {
  method: string;
  /** Path and query string, compared exactly, or a pattern tested against them. */
  path: string | RegExp;
  reply: ScriptedReply | ((request: ScriptedRequest) => ScriptedReply | Promise<ScriptedReply>);
  /** Number of requests this expectation matches. Default 1. */
  times?: number;
}

export interface ScriptedServer {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** `127.0.0.1:PORT`, the registry name for a RegistryClient. */
  host: string;
  /** Every request received, in order of arrival. */
  readonly requests: ScriptedRequest[];
  /** Adds expectations. A request takes the first declared expectation that matches and has answers left. */
  expect(...expectations: Expectation[]): void;
  /** Throws when a request was not expected or an expectation still has answers left. */
  verify(): void;
}

interface Pending {
  expectation: Expectation;
  left: number;
}

/** Starts a scripted server for the current test; it is verified and closed when the test finishes. */
export async function startScriptedServer(): Promise<ScriptedServer> {
  const pending: Pending[] = [];
  const requests: ScriptedRequest[] = [];
  const unexpected: string[] = [];
  const failures: string[] = [];

  const server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => {
      failures.push(`${req.method} ${req.url}: the scripted reply failed: ${String(error)}`);
      res.destroy();
    });
  });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    const path = req.url ?? '';
    const method = req.method ?? '';
    const match = pending.find((entry) => entry.left > 0 && entry.expectation.method === method && matches(entry.expectation.path, path));
    const replyOrFunction = match?.expectation.reply;
    // A reset comes before the body is read, so a client sending a large body sees a broken connection.
    if (match && replyOrFunction && typeof replyOrFunction !== 'function' && 'reset' in replyOrFunction) {
      match.left -= 1;
      requests.push({ method, path, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0) });
      req.socket.destroy();
      return;
    }

    for await (const chunk of req) chunks.push(chunk as Buffer);
    const request: ScriptedRequest = { method, path, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks) };
    requests.push(request);
    if (!match) {
      unexpected.push(`${method} ${path}`);
      res.writeHead(418, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNEXPECTED', message: `the scripted server did not expect ${method} ${path}` }] }));
      return;
    }
    match.left -= 1;
    const reply = typeof replyOrFunction === 'function' ? await replyOrFunction(request) : replyOrFunction!;
    send(res, reply);
  };

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  const scripted: ScriptedServer = {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    expect: (...expectations) => {
      for (const expectation of expectations) pending.push({ expectation, left: expectation.times ?? 1 });
    },
    verify: () => {
      const unmet = pending.filter((entry) => entry.left > 0).map((entry) => `${entry.expectation.method} ${String(entry.expectation.path)} (${entry.left} left)`);
      const problems = [
        ...unexpected.map((line) => `unexpected request: ${line}`),
        ...unmet.map((line) => `expected request never made: ${line}`),
        ...failures,
      ];
      if (problems.length > 0) throw new Error(`scripted server on port ${port}:\n  ${problems.join('\n  ')}`);
    },
  };

  onTestFinished(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
    scripted.verify();
  });
  return scripted;
}

function matches(pattern: string | RegExp, path: string): boolean {
  return typeof pattern === 'string' ? pattern === path : pattern.test(path);
}

function send(res: ServerResponse, reply: ScriptedReply): void {
  if ('reset' in reply) {
    res.socket?.destroy();
    return;
  }
  const body =
    reply.body === undefined ? Buffer.alloc(0) : typeof reply.body === 'string' || Buffer.isBuffer(reply.body) ? Buffer.from(reply.body) : Buffer.from(JSON.stringify(reply.body));
  const headers: Record<string, string | string[]> = { 'content-length': String(body.length), ...reply.headers };
  res.writeHead(reply.status, headers);
  if (reply.breakAfterBytes !== undefined) {
    res.write(body.subarray(0, reply.breakAfterBytes), () => res.socket?.destroy());
    return;
  }
  res.end(body);
}
