/**
 * Parsing of the Redis connection URL (`redis.url`, `MIRRORFLEET_REDIS_URL`) into one of three
 * deployments: a single instance, Redis Sentinel, or Redis Cluster. The module has no side effects and
 * imports no client, so the configuration schema can use it for validation.
 *
 * Accepted forms:
 * - `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` and `rediss://…` (TLS): one instance, passed to ioredis as is.
 * - `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT],HOST[:PORT]…/MASTER_NAME`: Sentinel processes
 *   (port 26379 by default) that name the current primary of the group MASTER_NAME.
 * - `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT],HOST[:PORT]…`: seed nodes of a Redis Cluster (port 6379
 *   by default); the client discovers the other nodes from them.
 * USER and PASSWORD are percent-decoded. They authenticate to the Redis data nodes (the primary and
 * replicas, or every cluster node), not to the Sentinel processes.
 */

/** A host and port of one Sentinel process or cluster seed node. */
export interface RedisNode {
  host: string;
  port: number;
}

/** A Redis deployment as named by a connection URL. */
export type RedisTarget =
  | { kind: 'single'; url: string; username?: string; password?: string }
  | { kind: 'sentinel'; sentinels: RedisNode[]; masterName: string; username?: string; password?: string }
  | { kind: 'cluster'; nodes: RedisNode[]; username?: string; password?: string };

const DEFAULT_SENTINEL_PORT = 26379;
const DEFAULT_CLUSTER_PORT = 6379;

// scheme, optional user information, host list, optional path. Nothing may follow the path.
const MULTI_HOST_URL = /^(redis\+sentinel|redis\+cluster):\/\/(?:([^@/?#]*)@)?([^/?#]+)(?:\/([^?#]*))?$/;

/** Parses a Redis connection URL, or returns `undefined` when it matches none of the accepted forms. */
export function parseRedisUrl(text: string): RedisTarget | undefined {
  if (text.startsWith('redis://') || text.startsWith('rediss://')) return parseSingleUrl(text);

  const match = MULTI_HOST_URL.exec(text);
  if (match === null) return undefined;
  const [, scheme, userInfo, hostList, path] = match;

  const credentials = parseUserInfo(userInfo);
  if (credentials === undefined) return undefined;
  const nodes = parseNodes(hostList!, scheme === 'redis+sentinel' ? DEFAULT_SENTINEL_PORT : DEFAULT_CLUSTER_PORT);
  if (nodes === undefined) return undefined;

  if (scheme === 'redis+sentinel') {
    const masterName = decodeOrUndefined(path ?? '');
    if (masterName === undefined || masterName === '' || masterName.includes('/')) return undefined;
    return { kind: 'sentinel', sentinels: nodes, masterName, ...credentials };
  }
  // A cluster has a single database, so there is no path to give.
  if (path !== undefined && path !== '') return undefined;
  return { kind: 'cluster', nodes, ...credentials };
}

/** Returns the password in a Redis connection URL, decoded, or `undefined` when there is none. */
export function redisUrlPassword(text: string): string | undefined {
  return parseRedisUrl(text)?.password;
}

/** Accepted key prefixes when `redis.url` names a Redis Cluster, as a noun phrase for error messages. */
export const CLUSTER_KEY_PREFIX_EXPECTED =
  'a prefix with a hash tag in braces, such as "{mirrorfleet}", because Redis Cluster needs all keys of a queue in one hash slot';

/**
 * Checks that a key prefix contains a Redis Cluster hash tag: a non-empty part between the first `{` and
 * the next `}`. Redis Cluster then hashes only that part, so every key built on the prefix lands in one
 * slot, which BullMQ's multi-key Lua scripts require.
 */
export function hasHashTag(prefix: string): boolean {
  const open = prefix.indexOf('{');
  if (open < 0) return false;
  const close = prefix.indexOf('}', open + 1);
  return close > open + 1;
}

function parseSingleUrl(text: string): RedisTarget | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.hostname === '') return undefined;
  const credentials = {
    ...(url.username === '' ? {} : { username: decodeOrUndefined(url.username) ?? url.username }),
    ...(url.password === '' ? {} : { password: decodeOrUndefined(url.password) ?? url.password }),
  };
  return { kind: 'single', url: text, ...credentials };
}

/** Splits `[USER]:PASSWORD` or `USER`; returns `undefined` for an invalid percent-encoding. */
function parseUserInfo(userInfo: string | undefined): { username?: string; password?: string } | undefined {
  if (userInfo === undefined || userInfo === '') return {};
  const colon = userInfo.indexOf(':');
  const rawUser = colon < 0 ? userInfo : userInfo.slice(0, colon);
  const rawPassword = colon < 0 ? '' : userInfo.slice(colon + 1);
  const username = decodeOrUndefined(rawUser);
  const password = decodeOrUndefined(rawPassword);
  if (username === undefined || password === undefined) return undefined;
  return { ...(username === '' ? {} : { username }), ...(password === '' ? {} : { password }) };
}

/** Parses `HOST[:PORT],HOST[:PORT]…`, where HOST may be an IPv6 address in brackets. */
function parseNodes(hostList: string, defaultPort: number): RedisNode[] | undefined {
  const nodes: RedisNode[] = [];
  for (const entry of hostList.split(',')) {
    const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(entry);
    if (match === null) return undefined;
    const host = match[1]!.startsWith('[') ? match[1]!.slice(1, -1) : match[1]!;
    const port = match[2] === undefined ? defaultPort : Number(match[2]);
    if (port < 1 || port > 65535) return undefined;
    nodes.push({ host, port });
  }
  return nodes;
}

function decodeOrUndefined(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}
