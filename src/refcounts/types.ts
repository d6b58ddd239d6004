import { InvalidInputError } from '../errors.ts';

/**
 * The reference store: what Redis records so that a cleanup deletes exactly the images no service uses.
 *
 * Glossary:
 * - image: one manifest of a repository in a mirror registry, named the way a user deploys it. Either
 *   by tag, `<repository>:<tag>@<digest>` (the tag pointed at that digest when the use was recorded), or
 *   by digest alone, `<repository>@<digest>`. That string is the *image key*.
 * - user: who deploys images, `<cluster>/<service>`. A cluster-mode job without a service records the
 *   use as `<cluster>/`, a use by the whole cluster.
 * - use: a user deploys an image. An image with no use left is *unused* from that moment; its *kind of
 *   release* (`previous`: a newer image of the same service replaced it; `released`: anything else)
 *   selects the retention time after which a sweep may delete it.
 * - tag record: the digest a tag of a repository last pointed at, as recorded by a job.
 * - index record: which child manifests an index lists, and the reverse, which indexes list a child.
 * - lease: a running job's hold on a repository. No manifest of that repository is deleted while a
 *   lease on it is live, because a manifest deleted by digest takes every tag that points at it, and
 *   a copy reuses children already present, so what a job is about to return is not known by digest
 *   until it has finished.
 * - claim: a sweep's exclusive hold on a repository while it deletes there. No lease is granted while a
 *   claim is held, and no claim while a lease is live.
 * - revision: a counter per repository that every recorded use increases. A sweep plans from a
 *   revision and claims only if it is unchanged, so it never acts on a plan that missed a new use.
 */

/** A manifest of a repository, named as a user deploys it. */
export interface ImageName {
  repository: string;
  /** Absent for a use by digest alone. */
  tag?: string | undefined;
  digest: string;
}

/** A user of images: one service of a cluster, or the whole cluster when the service is missing. */
export interface User {
  cluster: string;
  service?: string | undefined;
}

/** The way an image lost its last use, which selects its retention time. */
export type ReleaseKind = 'previous' | 'released';

/** Formats an image key: `<repository>:<tag>@<digest>`, or `<repository>@<digest>` without a tag. */
export function formatImageKey(image: ImageName): string {
  return image.tag === undefined ? `${image.repository}@${image.digest}` : `${image.repository}:${image.tag}@${image.digest}`;
}

/**
 * Parses an image key. Repository names contain neither `:` nor `@`, so the first of them ends the
 * repository. Throws InvalidInputError for anything else.
 */
export function parseImageKey(key: string): ImageName {
  const match = /^([^:@]+)(?::([^:@]+))?@([a-z0-9]+:[a-zA-Z0-9=_-]+)$/.exec(key);
  if (!match) throw new InvalidInputError(`invalid image key "${key}": expected <repository>:<tag>@<digest> or <repository>@<digest>`);
  return { repository: match[1]!, ...(match[2] === undefined ? {} : { tag: match[2] }), digest: match[3]! };
}

/** Formats a user: `<cluster>/<service>`, or `<cluster>/` for the whole cluster. */
export function formatUser(user: User): string {
  return `${user.cluster}/${user.service ?? ''}`;
}

/** Parses `<cluster>/<service>` or `<cluster>/`. */
export function parseUser(value: string): User {
  const slash = value.indexOf('/');
  if (slash <= 0) throw new InvalidInputError(`invalid user "${value}": expected <cluster>/<service> or <cluster>/`);
  const service = value.slice(slash + 1);
  return { cluster: value.slice(0, slash), ...(service === '' ? {} : { service }) };
}

/** One use of an image that a release or reconcile dropped, and how many uses the image has left. */
export interface DroppedUse {
  image: ImageName;
  user: User;
  usesLeft: number;
}

/** The records of one image. */
export interface ImageRecord {
  image: ImageName;
  key: string;
  /** Users and when each use was last recorded, in milliseconds (Redis clock). */
  users: Array<{ user: string; recordedAt: number }>;
  /** When the image lost its last use (Redis clock); absent while it is used. */
  unusedSince?: number | undefined;
  kind?: ReleaseKind | undefined;
}

/** A snapshot of one repository's records, read for planning a sweep. */
export interface RepositoryState {
  repository: string;
  /** The revision read before everything else; a claim succeeds only while it is unchanged. */
  revision: string;
  images: ImageRecord[];
  /** Tag records: the digest each tag last pointed at. */
  tags: Map<string, string>;
  /** Index records: children by index digest, and indexes by child digest. */
  children: Map<string, string[]>;
  parents: Map<string, string[]>;
  /** Leases live when read. */
  leases: number;
}
