import { createServer, request as httpRequest, Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A loopback HTTP proxy in front of one real registry. It forwards every request unchanged (the Host
 * header included, so the registry writes upload Locations that point back at the proxy) and, where a
 * test scripted a fault, responds itself or breaks the exchange instead. Each fault counts how often it fired,
 * and every request is recorded with its timing, so that a test can assert what happened.
 *
 * Faults apply in the order they were added; the first one that matches a request and has firings left
 * takes it. A request that no fault takes is forwarded as it is.
 */

export type FaultAction =
  /** Respond with this status, headers and body; the registry never sees the request. */
  | { kind: 'respond'; status: number; headers?: Record<string, string>; body?: string }
  /** Forward, send the response headers and the first `afterBytes` body bytes, then reset the connection. */
  | { kind: 'reset-mid-body'; afterBytes: number }
  /** Forward, and invert the body byte at `offset` (default: the middle); the length stays the same. */
  | { kind: 'corrupt-body'; offset?: number }
  /** Wait `ms` milliseconds before forwarding the request. */
  | { kind: 'delay'; ms: number }
  /** Forward, and send the response body in pieces of `bytes` with a pause of `pauseMs` before each. */
  | { kind: 'throttle-body'; bytes: number; pauseMs: number };

export interface Fault {
  /** Name under which the fault's firings are counted. */
  name: string;
  /** HTTP method to match; any method when absent. */
  method?: string;
  /** Matched against the request path with its query string, such as `/v2/app/blobs/sha256:ab…`. */
  path: RegExp;
  /** Matching requests let through before the fault fires. Default 0. */
  skip?: number;
  /** Firings at most. Default: every matching request after `skip`. */
  times?: number;
  action: FaultAction;
}

export interface ProxiedRequest {
  method: string;
  /** Path with query string. */
  path: string;
  /** `Range` header of the request, if any. */
  range: string | undefined;
  /** Status sent to the client; 0 when the connection was reset before a response. */
  status: number;
  /** Name of the fault that took the request, if any. */
  fault: string | undefined;
  /** `Location` header of the response, if any. */
  location: string | undefined;
  /** Milliseconds since the proxy started: when the request arrived, and when its response ended. */
  startMs: number;
  endMs: number;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT`, the registry part of image references that go through the proxy. */
  host: string;
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** Every request received since start or the last `reset`, in order of arrival. */
  readonly requests: ProxiedRequest[];
  /** Adds a fault after the ones already scripted. */
  inject(fault: Fault): void;
  /** Firings of the fault named `name` so far. */
  fired(name: string): number;
  /** Removes every fault and empties the request record and the counters. */
  reset(): void;
  stop(): Promise<void>;
}

interface ScriptedFault extends Fault {
  seen: number;
  firings: number;
}

/** Starts a fault proxy on a free loopback port in front of `upstream` (`http://127.0.0.1:PORT`). */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true });
  const started = performance.now();
  const faults: ScriptedFault[] = [];
  const firings = new Map<string, number>();
  const requests: ProxiedRequest[] = [];

  const server = createServer((request, response) => {
    const record: ProxiedRequest = {
      method: request.method ?? 'GET',
      path: request.url ?? '/',
      range: request.headers.range,
      status: 0,
      fault: undefined,
      location: undefined,
      startMs: performance.now() - started,
      endMs: 0,
    };
    requests.push(record);
    const fault = takeFault(faults, record);
    if (fault) {
      record.fault = fault.name;
      firings.set(fault.name, (firings.get(fault.name) ?? 0) + 1);
    }
    const finish = () => {
      record.endMs = performance.now() - started;
    };
    response.on('close', finish);
    handle(request, response, record, fault?.action).catch(() => response.destroy());
  });

  async function handle(request: IncomingMessage, response: ServerResponse, record: ProxiedRequest, action: FaultAction | undefined) {
    if (action?.kind === 'respond') {
      // Read the request body first, so that the client is not cut off while it still sends.
      request.resume();
      await once(request, 'end');
      const body = action.body ?? '';
      record.status = action.status;
      response.writeHead(action.status, { 'content-length': String(Buffer.byteLength(body)), ...action.headers }).end(body);
      return;
    }
    if (action?.kind === 'delay') await sleep(action.ms);

    const upstreamRequest = httpRequest({
      host: target.hostname,
      port: target.port,
      method: request.method,
      path: request.url,
      headers: request.headers,
      agent,
    });
    request.pipe(upstreamRequest);
    upstreamRequest.on('error', () => response.destroy());
    const [answer] = (await once(upstreamRequest, 'response')) as [IncomingMessage];
    record.status = answer.statusCode ?? 0;
    const location = answer.headers.location;
    record.location = typeof location === 'string' ? location : undefined;
    response.writeHead(answer.statusCode ?? 502, answer.headers);

    if (action?.kind === 'reset-mid-body') {
      await sendThenReset(answer, response, action.afterBytes);
    } else if (action?.kind === 'corrupt-body') {
      await sendCorrupted(answer, response, action.offset, Number(answer.headers['content-length'] ?? -1));
    } else if (action?.kind === 'throttle-body') {
      await sendThrottled(answer, response, action.bytes, action.pauseMs);
    } else {
      answer.pipe(response);
    }
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests,
    inject(fault) {
      faults.push({ ...fault, seen: 0, firings: 0 });
    },
    fired(name) {
      return firings.get(name) ?? 0;
    },
    reset() {
      faults.length = 0;
      firings.clear();
      requests.length = 0;
    },
    async stop() {
      server.closeAllConnections();
      server.close();
      agent.destroy();
      await once(server, 'close');
    },
  };
}

function takeFault(faults: ScriptedFault[], record: ProxiedRequest): ScriptedFault | undefined {
  for (const fault of faults) {
    if (fault.method !== undefined && fault.method !== record.method) continue;
    if (!fault.path.test(record.path)) continue;
    fault.seen += 1;
    if (fault.seen <= (fault.skip ?? 0)) continue;
    if (fault.times !== undefined && fault.firings >= fault.times) continue;
    fault.firings += 1;
    return fault;
  }
  return undefined;
}

async function sendThenReset(answer: IncomingMessage, response: ServerResponse, afterBytes: number): Promise<void> {
  let sent = 0;
  for await (const chunk of answer) {
    const piece = (chunk as Buffer).subarray(0, Math.max(0, afterBytes - sent));
    if (piece.length > 0) {
      response.write(piece);
      sent += piece.length;
    }
    if (sent >= afterBytes) break;
  }
  answer.destroy();
  // Let the written bytes leave before the reset, so that the client sees a body that breaks midway.
  await sleep(20);
  response.socket?.resetAndDestroy();
}

async function sendCorrupted(answer: IncomingMessage, response: ServerResponse, offset: number | undefined, length: number): Promise<void> {
  const position = offset ?? (length > 0 ? Math.floor(length / 2) : 0);
  let seen = 0;
  for await (const chunk of answer) {
    const bytes = Buffer.from(chunk as Buffer);
    if (position >= seen && position < seen + bytes.length) bytes[position - seen] = bytes[position - seen]! ^ 0xff;
    seen += bytes.length;
    if (!response.write(bytes)) await once(response, 'drain');
  }
  response.end();
}

async function sendThrottled(answer: IncomingMessage, response: ServerResponse, size: number, pauseMs: number): Promise<void> {
  for await (const chunk of answer) {
    const bytes = chunk as Buffer;
    for (let offset = 0; offset < bytes.length; offset += size) {
      await sleep(pauseMs);
      if (response.destroyed) return;
      response.write(bytes.subarray(offset, offset + size));
    }
  }
  response.end();
}
