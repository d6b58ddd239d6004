import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';

/**
 * A scripted source registry for the fleet tests: it serves a few small images that the test builds,
 * limits requests per one-second window of its own clock, and can report a Docker Hub style pull quota.
 * It answers only the requests a mirror job makes and records any other one as unexpected.
 */

/** One blob or manifest that the source serves. */
export interface Served {
  mediaType: string;
  body: Buffer;
}

export interface SourceRequest {
  method: string;
  path: string;
  /** Arrival time in ms (Date.now of the test process). */
  at: number;
  status: number;
  /** `RateLimit-Remaining` sent with the response, if any. */
  quotaRemaining: number | undefined;
}

export interface SourceOptions {
  /** Requests per one-second window; the ones above it get 429 with `Retry-After: 1`. */
  limit?: number;
  /**
   * Pull quota: when set, manifest responses carry `RateLimit-Remaining: <remaining>;w=21600`, and
   * every manifest GET answered 200 spends one pull (Docker Hub counts GETs, not HEADs).
   */
  quota?: { remaining: number };
}

export interface ScriptedSource {
  /** `127.0.0.1:PORT` */
  host: string;
  requests: SourceRequest[];
  /** Requests that the source did not expect, as `METHOD path`. */
  unexpected: string[];
  close(): Promise<void>;
}

export function digest(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Builds an image (a config blob and one random 2 KiB layer) and adds its paths to `served`. */
export function addImage(served: Map<string, Served>, repository: string, tag: string): void {
  const layer = randomBytes(2048);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digest(layer)] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digest(layer), size: layer.length }],
    }),
  );
  const manifestEntry = { mediaType: 'application/vnd.oci.image.manifest.v1+json', body: manifest };
  served.set(`/v2/${repository}/manifests/${tag}`, manifestEntry);
  served.set(`/v2/${repository}/manifests/${digest(manifest)}`, manifestEntry);
  served.set(`/v2/${repository}/blobs/${digest(config)}`, { mediaType: 'application/octet-stream', body: config });
  served.set(`/v2/${repository}/blobs/${digest(layer)}`, { mediaType: 'application/octet-stream', body: layer });
}

// The referrers API and the tags of the referrers tag schema (`sha256-<hex>`, and cosign's `.sig`,
// `.att` and `.sbom`) hold nothing: the images have no referrers.
const REFERRERS = /^\/v2\/.+\/(?:referrers\/sha256:|manifests\/sha256-)[0-9a-f]{64}(?:\.sig|\.att|\.sbom)?(?:\?.*)?$/;
const TAG_LIST = /^\/v2\/(.+)\/tags\/list(?:\?.*)?$/;

/**
 * Starts the source: HEAD and GET of the served paths and of the tag list, 404 for referrers, and 418
 * for anything else.
 */
export async function startSource(served: Map<string, Served>, options: SourceOptions = {}): Promise<ScriptedSource> {
  const requests: SourceRequest[] = [];
  const unexpected: string[] = [];
  const perWindow = new Map<number, number>();
  const limit = options.limit ?? Number.POSITIVE_INFINITY;

  const server = createServer((req, res) => {
    const at = Date.now();
    const window = Math.floor(at / 1000);
    const count = (perWindow.get(window) ?? 0) + 1;
    perWindow.set(window, count);
    const method = req.method ?? '';
    const path = req.url ?? '';
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      requests.push({ method, path, at, status, quotaRemaining: undefined });
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };

    if (count > limit) {
      json(429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'rate limit exceeded' }] }, { 'retry-after': '1' });
      return;
    }

    const entry = served.get(path);
    if ((method === 'GET' || method === 'HEAD') && entry) {
      const headers: Record<string, string> = { 'content-type': entry.mediaType, 'content-length': String(entry.body.length), 'docker-content-digest': digest(entry.body) };
      const quota = path.includes('/manifests/') ? options.quota : undefined;
      if (quota) {
        if (method === 'GET') quota.remaining = Math.max(0, quota.remaining - 1);
        headers['ratelimit-limit'] = '100;w=21600';
        headers['ratelimit-remaining'] = `${quota.remaining};w=21600`;
      }
      requests.push({ method, path, at, status: 200, quotaRemaining: quota?.remaining });
      res.writeHead(200, headers);
      res.end(method === 'GET' ? entry.body : undefined);
      return;
    }

    const tags = TAG_LIST.exec(path);
    if (method === 'GET' && tags) {
      json(200, { name: tags[1], tags: ['v1'] });
      return;
    }
    if ((method === 'GET' || method === 'HEAD') && REFERRERS.test(path)) {
      json(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
      return;
    }
    unexpected.push(`${method} ${path}`);
    json(418, { errors: [{ code: 'UNEXPECTED', message: `the source did not expect ${method} ${path}` }] });
  });

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    unexpected,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Returns the number of requests that arrived in each one-second window, by window start in s. */
export function countPerWindow(requests: readonly SourceRequest[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const request of requests) {
    const window = Math.floor(request.at / 1000);
    counts.set(window, (counts.get(window) ?? 0) + 1);
  }
  return counts;
}
