import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { once } from 'node:events';

export type Route = (request: IncomingMessage, response: ServerResponse) => void;

/**
 * An HTTP server on 127.0.0.1 that responds only to the requests its test scripted, as `METHOD /path`
 * (query string included). Any other request gets a 500 and is recorded in `unexpected`.
 */
export interface ScriptedServer {
  readonly port: number;
  /** `http://127.0.0.1:PORT` or `https://...`. */
  readonly origin: string;
  /** TCP connections accepted so far. */
  connections: number;
  /** Every request received, as `METHOD /path`. */
  readonly requests: string[];
  readonly unexpected: string[];
  /** Replaces the script and empties the counters. */
  script(routes: Record<string, Route>): void;
  close(): Promise<void>;
}

export async function startScriptedServer(tls?: { key: string; cert: string }): Promise<ScriptedServer> {
  let routes: Record<string, Route> = {};
  const listener = (request: IncomingMessage, response: ServerResponse): void => {
    const key = `${request.method} ${request.url}`;
    state.requests.push(key);
    const route = routes[key];
    if (route) {
      route(request, response);
      return;
    }
    state.unexpected.push(key);
    response.writeHead(500).end('unexpected request');
  };
  const server: Server = tls ? createHttpsServer(tls, listener) : createHttpServer(listener);
  server.on('connection', () => {
    state.connections += 1;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  const state: ScriptedServer = {
    port,
    origin: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    connections: 0,
    requests: [],
    unexpected: [],
    script(next) {
      routes = next;
      state.connections = 0;
      state.requests.length = 0;
      state.unexpected.length = 0;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  return state;
}

/** A route that responds with `status` (200 by default), `headers` and `body`. */
export function reply(body: string, status = 200, headers: Record<string, string> = {}): Route {
  return (request, response) => {
    request.resume();
    response.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers }).end(body);
  };
}
