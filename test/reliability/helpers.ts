import { Job, Queue } from 'bullmq';
import { MIRROR_JOB_OPTIONS, MIRROR_QUEUE, normaliseMirrorRequest, parseMirrorRequest, type MirrorRequestInput } from '../../queues/mirror.ts';
import { inspectRaw } from '../harness/skopeo.ts';

/**
 * Shared pieces of the reliability tests: the soak switch, enqueueing with a chosen number of
 * attempts, waiting for jobs to settle, and an independent check of what a registry holds.
 */

/** True under `npm run test:soak`, which sets MIRRORFLEET_SOAK=1 for the long variants. */
export const SOAK = process.env.MIRRORFLEET_SOAK === '1';

/** Returns `lean` in `npm test` and `soak` under `npm run test:soak`. */
export function soakCount(lean: number, soak: number): number {
  return SOAK ? soak : lean;
}

/**
 * Enqueues a mirror job as the producer does, but with `attempts` attempts, so that a test can tell a
 * failure that the registry client absorbed from one that BullMQ retried.
 */
export async function enqueueMirror(queue: Queue, input: MirrorRequestInput, attempts = 1): Promise<string> {
  const request = normaliseMirrorRequest(parseMirrorRequest(input));
  const job = await queue.add(MIRROR_QUEUE, request, { ...MIRROR_JOB_OPTIONS, attempts });
  return job.id!;
}

export interface SettledJob {
  id: string;
  state: 'completed' | 'failed';
  /** `CODE: message` of a failed job. */
  failedReason: string;
  returnvalue: unknown;
  attemptsMade: number;
}

/**
 * Polls until every job in `ids` is completed or failed, and returns them. Throws when a job is gone
 * from Redis, or after `timeoutMs` with the states the jobs are in.
 */
export async function waitForJobs(queue: Queue, ids: readonly string[], timeoutMs: number): Promise<SettledJob[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const settled: SettledJob[] = [];
    const pending: string[] = [];
    for (const id of ids) {
      const state = await queue.getJobState(id);
      if (state === 'unknown') throw new Error(`job ${id} is missing from Redis`);
      // Read the job after its state, so that a job that settles in between is read settled.
      const job = await Job.fromId(queue, id);
      if ((state === 'completed' || state === 'failed') && job) {
        settled.push({ id, state, failedReason: job.failedReason ?? '', returnvalue: job.returnvalue, attemptsMade: job.attemptsMade });
      } else {
        pending.push(`${id}=${state}`);
      }
    }
    if (pending.length === 0) return settled;
    if (Date.now() > deadline) throw new Error(`${pending.length} jobs did not settle within ${timeoutMs} ms: ${pending.slice(0, 10).join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * Returns the tags of a repository in the registry at `url`, or [] when the repository does not exist.
 * A tag list needs no Accept header, unlike a HEAD of a manifest: distribution 2.8 returns 404 to a
 * request for an OCI manifest that does not accept OCI types, which would make a tag look absent.
 */
export async function listTags(url: string, repository: string): Promise<string[]> {
  const response = await fetch(`${url}/v2/${repository}/tags/list`);
  if (response.status === 404) return [];
  if (response.status !== 200) throw new Error(`tag list of ${repository} answered ${response.status}: ${await response.text()}`);
  return ((await response.json()) as { tags: string[] | null }).tags ?? [];
}

interface Descriptor {
  mediaType: string;
  digest: string;
}

interface ManifestBody {
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: (Descriptor & { urls?: string[] })[];
}

/** A tag whose manifest tree is not whole: what is missing under it. */
export interface BrokenTag {
  reference: string;
  missing: string[];
}

/**
 * Walks every tag of every repository in the registry at `url` (`http://HOST:PORT`, no auth) and
 * returns the tags under which a child manifest or a blob is missing. Manifests are read with skopeo,
 * blobs checked with a plain HEAD, so mirrorfleet's own client judges nothing.
 */
export async function findBrokenTags(url: string): Promise<{ tags: number; broken: BrokenTag[] }> {
  const host = new URL(url).host;
  const broken: BrokenTag[] = [];
  let tags = 0;
  for (const repository of await listRepositories(url)) {
    const list = (await (await fetch(`${url}/v2/${repository}/tags/list`)).json()) as { tags: string[] | null };
    for (const tag of list.tags ?? []) {
      tags += 1;
      const missing: string[] = [];
      await checkManifest(url, host, repository, tag, missing);
      if (missing.length > 0) broken.push({ reference: `${host}/${repository}:${tag}`, missing });
    }
  }
  return { tags, broken };
}

/** Lists every repository of the catalog, page by page (distribution returns at most 1000 per page). */
async function listRepositories(url: string): Promise<string[]> {
  const repositories: string[] = [];
  let next: string | undefined = `${url}/v2/_catalog?n=1000`;
  while (next !== undefined) {
    const response: Response = await fetch(next);
    if (response.status !== 200) throw new Error(`catalog of ${url} answered ${response.status}: ${await response.text()}`);
    repositories.push(...(((await response.json()) as { repositories: string[] | null }).repositories ?? []));
    const link = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get('link') ?? '')?.[1];
    next = link === undefined ? undefined : new URL(link, url).href;
  }
  return repositories;
}

async function checkManifest(url: string, host: string, repository: string, reference: string, missing: string[]): Promise<void> {
  const separator = reference.includes(':') ? '@' : ':';
  let body: ManifestBody;
  try {
    body = JSON.parse((await inspectRaw(`${host}/${repository}${separator}${reference}`)).toString('utf8')) as ManifestBody;
  } catch {
    missing.push(`manifest ${reference}`);
    return;
  }
  for (const child of body.manifests ?? []) await checkManifest(url, host, repository, child.digest, missing);
  const blobs = [...(body.config ? [body.config] : []), ...(body.layers ?? []).filter((layer) => !layer.urls?.length)];
  for (const blob of blobs) {
    const head = await fetch(`${url}/v2/${repository}/blobs/${blob.digest}`, { method: 'HEAD' });
    if (head.status !== 200) missing.push(`blob ${blob.digest} (HEAD answered ${head.status})`);
  }
}
