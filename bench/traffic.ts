import type { AccessLogEntry } from '../test/harness/registry.ts';

/**
 * Requests and bytes one registry saw, from its access log. The distribution registry logs neither
 * request body sizes nor the bytes of a PATCH, so bytes are counted by digest. A blob GET with status 200
 * or 206 counts the whole blob as pulled. An upload whose final `PUT ?digest=` returned 201 counts the
 * whole blob as pushed, and an upload abandoned halfway is not counted.
 */
export interface Traffic {
  requests: number;
  /** Requests by `METHOD kind`, such as `HEAD manifest` or `POST upload`. */
  byKind: Record<string, number>;
  /** Requests whose path is under `/blobs/`: blob reads and checks, uploads and mounts. */
  blobRequests: number;
  manifestPuts: number;
  blobBytesPulled: number;
  blobBytesPushed: number;
}

export type RequestKind = 'manifest' | 'blob' | 'upload' | 'other';

/** Sorts a request path into manifest, blob, upload (which includes mounts) or other. */
export function requestKind(path: string): RequestKind {
  if (path.includes('/blobs/uploads/')) return 'upload';
  if (path.includes('/blobs/')) return 'blob';
  if (path.includes('/manifests/')) return 'manifest';
  return 'other';
}

/** Counts `entries`; `blobSizes` maps each digest the benchmark created to its size. */
export function trafficOf(entries: AccessLogEntry[], blobSizes: ReadonlyMap<string, number>): Traffic {
  const traffic: Traffic = { requests: 0, byKind: {}, blobRequests: 0, manifestPuts: 0, blobBytesPulled: 0, blobBytesPushed: 0 };
  for (const entry of entries) {
    const kind = requestKind(entry.path);
    traffic.requests += 1;
    const key = `${entry.method} ${kind}`;
    traffic.byKind[key] = (traffic.byKind[key] ?? 0) + 1;
    if (kind === 'blob' || kind === 'upload') traffic.blobRequests += 1;
    if (kind === 'manifest' && entry.method === 'PUT') traffic.manifestPuts += 1;

    if (kind === 'blob' && entry.method === 'GET' && (entry.status === 200 || entry.status === 206)) {
      traffic.blobBytesPulled += sizeOf(blobSizes, entry.path.slice(entry.path.lastIndexOf('/') + 1));
    }
    if (kind === 'upload' && entry.method === 'PUT' && entry.status === 201) {
      const digest = new URL(entry.path, 'http://registry.invalid').searchParams.get('digest');
      if (digest) traffic.blobBytesPushed += sizeOf(blobSizes, digest);
    }
  }
  return traffic;
}

function sizeOf(blobSizes: ReadonlyMap<string, number>, digest: string): number {
  const size = blobSizes.get(digest);
  if (size === undefined) throw new Error(`the access log names blob ${digest}, which the benchmark did not create`);
  return size;
}

/** Formats `byKind` as `HEAD manifest 1, GET blob 4`, largest count first. */
export function formatKinds(byKind: Record<string, number>, divisor = 1): string {
  return Object.entries(byKind)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, count]) => `${kind} ${Number.isInteger(count / divisor) ? count / divisor : (count / divisor).toFixed(2)}`)
    .join(', ');
}
