import { createServer, request as forward } from 'node:http';
import { once } from 'node:events';

/**
 * An HTTP proxy on 127.0.0.1 in front of a real registry that breaks chosen connections halfway. It
 * passes on part of a request body or of a response body and then destroys both sockets, which is what
 * a client sees when a connection dies mid-transfer. The Host header is passed on unchanged, so the
 * registry writes the proxy's address into the Locations it sends.
 */

export interface BreakRule {
  method: string;
  path: RegExp;
  /** Matching requests let through whole before the one that breaks. Default 0. */
  skip?: number;
  /** Break the response after passing on this many body bytes. */
  afterResponseBytes?: number;
  /** Break the request after passing on this many body bytes. */
  afterRequestBytes?: number;
}

export interface ProxiedRequest {
  method: string;
  path: string;
  range: string | undefined;
  /** Status of the registry's response, when there was one. */
  status?: number;
  broken: boolean;
}

export interface BreakingProxy {
  /** `127.0.0.1:PORT`, the registry name to give a client. */
  host: string;
  readonly requests: ProxiedRequest[];
  /** Breaks the next request that matches `rule` (after `skip` matching ones). */
  breakOnce(rule: BreakRule): void;
  stop(): Promise<void>;
}

export async function startBreakingProxy(upstreamPort: number): Promise<BreakingProxy> {
  const requests: ProxiedRequest[] = [];
  const rules: Array<BreakRule & { skipped: number }> = [];

  const takeRule = (method: string, path: string): BreakRule | undefined => {
    const index = rules.findIndex((rule) => rule.method === method && rule.path.test(path));
    if (index < 0) return undefined;
    const rule = rules[index]!;
    if (rule.skipped < (rule.skip ?? 0)) {
      rule.skipped += 1;
      return undefined;
    }
    rules.splice(index, 1);
    return rule;
  };

  const server = createServer((req, res) => {
    const record: ProxiedRequest = { method: req.method ?? '', path: req.url ?? '', range: req.headers.range, broken: false };
    requests.push(record);
    const rule = takeRule(record.method, record.path);
    const breakBoth = () => {
      record.broken = true;
      upstream.destroy();
      req.socket.destroy();
    };

    const upstream = forward({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      record.status = answer.statusCode;
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      const limit = rule?.afterResponseBytes;
      if (limit === undefined) {
        answer.pipe(res);
        return;
      }
      let passed = 0;
      answer.on('data', (chunk: Buffer) => {
        if (record.broken) return;
        if (passed + chunk.length >= limit) {
          res.write(chunk.subarray(0, limit - passed), breakBoth);
          record.broken = true;
          return;
        }
        passed += chunk.length;
        res.write(chunk);
      });
      answer.on('end', () => {
        if (!record.broken) res.end();
      });
    });
    upstream.on('error', () => res.destroy());

    const limit = rule?.afterRequestBytes;
    if (limit === undefined) {
      req.pipe(upstream);
      return;
    }
    let passed = 0;
    req.on('data', (chunk: Buffer) => {
      if (record.broken) return;
      if (passed + chunk.length >= limit) {
        upstream.write(chunk.subarray(0, limit - passed), breakBoth);
        record.broken = true;
        return;
      }
      passed += chunk.length;
      upstream.write(chunk);
    });
    req.on('end', () => {
      if (!record.broken) upstream.end();
    });
  });

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    breakOnce: (rule) => rules.push({ ...rule, skipped: 0 }),
    stop: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
