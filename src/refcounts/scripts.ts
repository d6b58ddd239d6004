import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * The Lua scripts that change the reference store. Every record changes only through them, so each
 * change is atomic with the checks it depends on. Key names follow keys.ts: every script takes the key
 * base `<prefix>:refs:<registry>` as KEYS[1] and derives the keys it touches from it. Times are
 * milliseconds of the Redis clock (TIME), so that every worker compares against the same clock.
 */

// Helpers shared by the scripts. An image key is `<repository>:<tag>@<digest>` or `<repository>@<digest>`;
// repository names contain neither ':' nor '@'.
const PRELUDE = `
local base = KEYS[1]

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function repository_of(image)
  local stop = string.find(image, '[:@]')
  return string.sub(image, 1, stop - 1)
end

local function digest_of(image)
  local at = string.find(image, '@', 1, true)
  return string.sub(image, at + 1)
end

local function tag_of(image)
  local stop = string.find(image, '[:@]')
  if string.sub(image, stop, stop) == '@' then return '' end
  local at = string.find(image, '@', stop, true)
  return string.sub(image, stop + 1, at - 1)
end

local function split_user(user)
  local slash = string.find(user, '/', 1, true)
  return string.sub(user, 1, slash - 1), string.sub(user, slash + 1)
end

local function lease_live(repository, token)
  local expiry = redis.call('ZSCORE', base .. ':leases:' .. repository, token)
  return expiry ~= false and expiry ~= nil and tonumber(expiry) > now_ms()
end

local function add_use(image, user, time)
  local repository = repository_of(image)
  local tag = tag_of(image)
  redis.call('SADD', base .. ':repos', repository)
  redis.call('SADD', base .. ':images:' .. repository, image)
  if tag ~= '' then redis.call('HSET', base .. ':tags:' .. repository, tag, digest_of(image)) end
  redis.call('ZADD', base .. ':uses:' .. image, time, user)
  redis.call('SADD', base .. ':user:' .. user, image)
  local cluster, service = split_user(user)
  redis.call('SADD', base .. ':cluster:' .. cluster, service)
  redis.call('ZREM', base .. ':unused', image)
  redis.call('HDEL', base .. ':unused-kind', image)
  redis.call('INCR', base .. ':revision:' .. repository)
end

-- Drops one use. An image left without a use is marked unused from 'time' with 'kind'. Returns the
-- number of uses the image has left.
local function drop_use(image, user, time, kind)
  local removed = redis.call('ZREM', base .. ':uses:' .. image, user)
  redis.call('SREM', base .. ':user:' .. user, image)
  if redis.call('SCARD', base .. ':user:' .. user) == 0 then
    local cluster, service = split_user(user)
    redis.call('SREM', base .. ':cluster:' .. cluster, service)
  end
  local left = redis.call('ZCARD', base .. ':uses:' .. image)
  if removed == 1 and left == 0 then
    redis.call('ZADD', base .. ':unused', time, image)
    redis.call('HSET', base .. ':unused-kind', image, kind)
  end
  return left
end

-- Uses an image would have left once every user in 'leaving' (a table of user -> true) is gone.
local function uses_left_without(image, leaving)
  local left = 0
  for _, user in ipairs(redis.call('ZRANGE', base .. ':uses:' .. image, 0, -1)) do
    if not leaving[user] then left = left + 1 end
  end
  return left
end

-- True when the image's repository lies under 'prefix' ('' takes every repository).
local function in_scope(image, prefix)
  if prefix == '' then return true end
  local repository = repository_of(image)
  return repository == prefix or string.sub(repository, 1, #prefix + 1) == prefix .. '/'
end

local function users_of_cluster(cluster, service)
  if service ~= '*' then return { cluster .. '/' .. service } end
  local users = {}
  for _, member in ipairs(redis.call('SMEMBERS', base .. ':cluster:' .. cluster)) do
    table.insert(users, cluster .. '/' .. member)
  end
  return users
end
`;

/**
 * Takes a lease on a repository for a running job, unless a sweep is deleting there.
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] lease token, ARGV[3] time to live in milliseconds
 * Returns 1 when the lease is taken, 0 when a sweep holds a claim on the repository (try again later).
 */
export const ACQUIRE_LEASE = `${PRELUDE}
local repository, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', base .. ':claim:' .. repository) == 1 then return 0 end
local leases = base .. ':leases:' .. repository
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
redis.call('ZADD', leases, now + ttl, token)
redis.call('PEXPIRE', leases, ttl * 2)
return 1
`;

/**
 * Extends a live lease.
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] lease token, ARGV[3] time to live in milliseconds
 * Returns 1 when extended, 0 when the lease had expired or was released (it is not taken again).
 */
export const RENEW_LEASE = `${PRELUDE}
local repository, token, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local leases = base .. ':leases:' .. repository
if not lease_live(repository, token) then
  redis.call('ZREM', leases, token)
  return 0
end
redis.call('ZADD', leases, 'XX', now_ms() + ttl, token)
if redis.call('PTTL', leases) < ttl * 2 then redis.call('PEXPIRE', leases, ttl * 2) end
return 1
`;

/**
 * Gives a lease back.
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] lease token
 * Returns 1 when the lease was held, 0 when it was already gone.
 */
export const RELEASE_LEASE = `${PRELUDE}
return redis.call('ZREM', base .. ':leases:' .. ARGV[1], ARGV[2])
`;

/**
 * Records that a user deploys an image, while the lease of the job that produced it is live. With a
 * kind of release, also releases the user's other images of the same repository: in service mode, a
 * newer image replaces the service's previous image of the same source repository.
 * KEYS[1] key base
 * ARGV[1] image key, ARGV[2] user (`<cluster>/<service>` or `<cluster>/`), ARGV[3] lease token on the
 * image's repository, ARGV[4] kind for the released images ('previous' or 'released'), or '' to release
 * nothing, ARGV[5] '1' to give the lease back once the use is recorded, else '0', ARGV[6] time the
 * request was made (ms), or '' when unknown, ARGV[7..] index records: parent and child digests in pairs.
 * When releasing, requests are ordered by the time they were made, not by when their jobs finish: a use
 * from a request older than the user's newest one for the repository is recorded as released at once,
 * and releases nothing, so a slow job for an older version never replaces a newer one.
 * Returns {0} when the lease is no longer live (nothing is recorded, and the lease is not given back),
 * else {1, released image key, uses it has left, ...}.
 */
export const RECORD_USE = `${PRELUDE}
local image, user, token, kind, giveBack, requested = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local repository = repository_of(image)
if not lease_live(repository, token) then return { 0 } end

local time = now_ms()
add_use(image, user, time)
if giveBack == '1' then redis.call('ZREM', base .. ':leases:' .. repository, token) end
for i = 7, #ARGV, 2 do
  redis.call('SADD', base .. ':children:' .. repository .. '@' .. ARGV[i], ARGV[i + 1])
  redis.call('SADD', base .. ':parents:' .. repository .. '@' .. ARGV[i + 1], ARGV[i])
end

local result = { 1 }
if kind ~= '' then
  local newest_key = base .. ':requested:' .. user
  local newest = redis.call('HMGET', newest_key, repository, repository .. '@image')
  if requested and tonumber(newest[1]) and requested < tonumber(newest[1]) then
    -- An older request for the image the newest one recorded leaves that use in place.
    if image ~= newest[2] then
      table.insert(result, image)
      table.insert(result, drop_use(image, user, time, kind))
    end
    return result
  end
  if requested then redis.call('HSET', newest_key, repository, requested, repository .. '@image', image) end
  for _, other in ipairs(redis.call('SMEMBERS', base .. ':user:' .. user)) do
    if other ~= image and repository_of(other) == repository then
      table.insert(result, other)
      table.insert(result, drop_use(other, user, time, kind))
    end
  end
end
return result
`;

/**
 * Drops every use of one user, or of every user of a cluster, in the repositories under a prefix.
 * KEYS[1] key base
 * ARGV[1] cluster, ARGV[2] service, or '*' for every user of the cluster, the whole-cluster user included
 * ARGV[3] kind recorded for images left unused ('previous' or 'released'), ARGV[4] '1' for a dry run
 * (nothing changes, and the result lists what would), ARGV[5] repository prefix ('' for every repository)
 * Returns {image key, user, uses the image has left, ...}, one triple per dropped use.
 */
export const RELEASE_USES = `${PRELUDE}
local cluster, service, kind, dry, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1', ARGV[5]
local users = users_of_cluster(cluster, service)
local leaving = {}
for _, user in ipairs(users) do leaving[user] = true end

local time = now_ms()
local result = {}
for _, user in ipairs(users) do
  for _, image in ipairs(redis.call('SMEMBERS', base .. ':user:' .. user)) do
    if in_scope(image, prefix) then
      local left
      if dry then left = uses_left_without(image, leaving) else left = drop_use(image, user, time, kind) end
      table.insert(result, image)
      table.insert(result, user)
      table.insert(result, left)
    end
  end
end
return result
`;

/**
 * Drops the uses of a cluster, in the repositories under a prefix, that a reconcile did not find, except
 * uses recorded after it started (a mirror that finished meanwhile). A use recorded in the very millisecond
 * the reconcile started counts as before it, because a mirror that finished just before the request may
 * share that millisecond on a fast machine.
 * KEYS[1] key base
 * ARGV[1] cluster, ARGV[2] start of the reconcile (ms, Redis clock), ARGV[3] '1' for a dry run,
 * ARGV[4] repository prefix ('' for every repository), ARGV[5..] user and image key pairs to keep
 * Returns {image key, user, uses the image has left, ...}, one triple per dropped use.
 */
export const DROP_STALE_USES = `${PRELUDE}
local cluster, started, dry, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local keep = {}
for i = 5, #ARGV, 2 do keep[ARGV[i] .. ' ' .. ARGV[i + 1]] = true end

local drops = {}
for _, user in ipairs(users_of_cluster(cluster, '*')) do
  for _, image in ipairs(redis.call('SMEMBERS', base .. ':user:' .. user)) do
    local recorded = tonumber(redis.call('ZSCORE', base .. ':uses:' .. image, user) or '0')
    if in_scope(image, prefix) and not keep[user .. ' ' .. image] and recorded <= started then
      table.insert(drops, { image, user })
    end
  end
end

local leaving_by_image = {}
for _, drop in ipairs(drops) do
  leaving_by_image[drop[1]] = leaving_by_image[drop[1]] or {}
  leaving_by_image[drop[1]][drop[2]] = true
end

local time = now_ms()
local result = {}
for _, drop in ipairs(drops) do
  local left
  if dry then left = uses_left_without(drop[1], leaving_by_image[drop[1]]) else left = drop_use(drop[1], drop[2], time, 'released') end
  table.insert(result, drop[1])
  table.insert(result, drop[2])
  table.insert(result, left)
end
return result
`;

/**
 * Claims a repository for a sweep that is about to delete there: only when no lease is live and no use
 * was recorded since the sweep read the repository's revision.
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] claim token, ARGV[3] time to live in milliseconds, ARGV[4] revision read
 * when planning
 * Returns 1 when claimed, 0 when a lease is live, -1 when the revision changed, -2 when another sweep
 * holds the claim.
 */
export const CLAIM_REPOSITORY = `${PRELUDE}
local repository, token, ttl, revision = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local leases = base .. ':leases:' .. repository
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now_ms())
if redis.call('ZCARD', leases) > 0 then return 0 end
if (redis.call('GET', base .. ':revision:' .. repository) or '0') ~= revision then return -1 end
if not redis.call('SET', base .. ':claim:' .. repository, token, 'NX', 'PX', ttl) then return -2 end
return 1
`;

/**
 * Extends a claim held by the caller.
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] claim token, ARGV[3] time to live in milliseconds
 * Returns 1 when extended, 0 when the claim is no longer the caller's.
 */
export const RENEW_CLAIM = `${PRELUDE}
local claim = base .. ':claim:' .. ARGV[1]
if redis.call('GET', claim) == ARGV[2] then return redis.call('PEXPIRE', claim, ARGV[3]) end
return 0
`;

/**
 * Gives a claim back.
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] claim token
 * Returns 1 when released, 0 when the claim was no longer the caller's.
 */
export const RELEASE_CLAIM = `${PRELUDE}
local claim = base .. ':claim:' .. ARGV[1]
if redis.call('GET', claim) == ARGV[2] then return redis.call('DEL', claim) end
return 0
`;

/**
 * Removes the records of manifests a sweep deleted and of images it dropped, while its claim holds.
 * An image that has a use again keeps its records (it cannot gain one under a claim, so this only
 * guards against a bug elsewhere).
 * KEYS[1] key base
 * ARGV[1] repository, ARGV[2] claim token, ARGV[3] number n of deleted manifests, ARGV[4..3+n] their
 * digests, ARGV[4+n..] image keys to forget whose manifest may remain (deleted tags, dropped records)
 * Returns 1, or 0 when the claim is no longer held (nothing changes).
 */
export const FORGET = `${PRELUDE}
local repository, token, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('GET', base .. ':claim:' .. repository) ~= token then return 0 end

local images = base .. ':images:' .. repository
local tags = base .. ':tags:' .. repository
local deleted = {}
for i = 4, 3 + count do deleted[ARGV[i]] = true end

local function forget_image(image)
  if redis.call('ZCARD', base .. ':uses:' .. image) > 0 then return end
  redis.call('DEL', base .. ':uses:' .. image)
  redis.call('SREM', images, image)
  redis.call('ZREM', base .. ':unused', image)
  redis.call('HDEL', base .. ':unused-kind', image)
  local tag = tag_of(image)
  if tag ~= '' and redis.call('HGET', tags, tag) == digest_of(image) then redis.call('HDEL', tags, tag) end
end

for _, image in ipairs(redis.call('SMEMBERS', images)) do
  if deleted[digest_of(image)] then forget_image(image) end
end
for i = 4 + count, #ARGV do forget_image(ARGV[i]) end

for i = 4, 3 + count do
  local digest = ARGV[i]
  local children = base .. ':children:' .. repository .. '@' .. digest
  local parents = base .. ':parents:' .. repository .. '@' .. digest
  for _, child in ipairs(redis.call('SMEMBERS', children)) do
    redis.call('SREM', base .. ':parents:' .. repository .. '@' .. child, digest)
  end
  for _, parent in ipairs(redis.call('SMEMBERS', parents)) do
    redis.call('SREM', base .. ':children:' .. repository .. '@' .. parent, digest)
  end
  redis.call('DEL', children, parents)
end

if redis.call('SCARD', images) == 0 then
  redis.call('SREM', base .. ':repos', repository)
  redis.call('DEL', tags)
end
return 1
`;

/**
 * Runs a script by its SHA-1 (EVALSHA), sending its source once per Redis server when the server does
 * not know it yet (NOSCRIPT, after a restart or on a new server).
 */
export class Script {
  readonly source: string;
  readonly sha: string;

  constructor(source: string) {
    this.source = source;
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(redis: Redis, keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

export const SCRIPTS = {
  acquireLease: new Script(ACQUIRE_LEASE),
  renewLease: new Script(RENEW_LEASE),
  releaseLease: new Script(RELEASE_LEASE),
  recordUse: new Script(RECORD_USE),
  releaseUses: new Script(RELEASE_USES),
  dropStaleUses: new Script(DROP_STALE_USES),
  claimRepository: new Script(CLAIM_REPOSITORY),
  renewClaim: new Script(RENEW_CLAIM),
  releaseClaim: new Script(RELEASE_CLAIM),
  forget: new Script(FORGET),
};
