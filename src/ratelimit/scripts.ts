/**
 * Lua scripts of the request budget that every worker shares for one registry host. The state of a
 * host lives in one hash, and the requests in flight in one sorted set per request kind:
 *
 * - `tokens`, `refilledAt`: a token bucket. It refills at the configured requests per second up to the
 *   burst size, and every request takes one token.
 * - `notBefore`: the time in ms before which no request to the host starts, set by a 429 or a
 *   `Retry-After`.
 * - `congestion:<kind>`: how many 429 and 503 responses requests of that kind have received. A worker
 *   that notices it grow cuts its concurrency window even when another worker received them.
 * - `quotaRemaining`, `quotaAt`, `probeAt`: the last `RateLimit-Remaining` value the host sent, when it
 *   arrived, and the earliest time a paused pull may send the next quota probe.
 * - `rate`, `rateAt`, `rateCutAt`: the request rate that the fleet keeps now, the time from which
 *   healthy responses raise it, and the time of the last cut. 429 responses cut the rate and healthy
 *   responses raise it again (see REPORT_SCRIPT). Without `rate`, the configured rate applies.
 *
 * Times are milliseconds. The caller passes the current time, or '' to use the Redis server clock,
 * which every worker shares. Tests pass a clock of their own.
 */

/**
 * Takes a place in the budget for one request.
 * KEYS[1] budget hash of the registry host
 * KEYS[2] sorted set of the leases in flight of the request's kind: member lease id, score expiry time
 * ARGV[1] current time, or '' for the server clock
 * ARGV[2] lease id
 * ARGV[3] lease lifetime; its holder renews it while the request runs
 * ARGV[4] configured requests per second, a decimal number greater than 0; the bucket refills at the
 *         hash's `rate` when a 429 has cut it, never faster than this
 * ARGV[5] configured burst: the most tokens the bucket holds at the configured rate. A cut rate shrinks
 *         the bucket in proportion, to no less than 1 token, so the end of a pause brings no large burst.
 * ARGV[6] the most requests of this kind in flight at once, fleet-wide
 * ARGV[7] request kind, such as manifest-read
 * ARGV[8] 1 when the request spends pull quota (a manifest GET), else 0
 * ARGV[9] pull quota floor: requests that spend quota wait while the last RateLimit-Remaining is below
 *         it; 0 turns the floor off
 * ARGV[10] time between two quota probes
 * ARGV[11] time after which the keys of an idle host expire
 * Returns {granted, waitMs, reason, congestion, now, rate}. When granted is 1, reason is 'granted', the
 * lease is recorded, and rate is the shared request rate as a string (below ARGV[4] after a 429 cut it).
 * Otherwise reason is 'not-before', 'quota', 'concurrency' or 'rate', with the time to wait before
 * asking again, or 'probe' with 0: the caller sends a quota probe now and then asks again; rate is then
 * ''. congestion is the kind's congestion count, and now the time the script used.
 */
export const ACQUIRE_SCRIPT = `
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local congestion = tonumber(redis.call('HGET', KEYS[1], 'congestion:' .. ARGV[7]) or '0')

local notBefore = tonumber(redis.call('HGET', KEYS[1], 'notBefore') or '0')
if now < notBefore then
  return {0, notBefore - now, 'not-before', congestion, now, ''}
end

local floor = tonumber(ARGV[9])
if ARGV[8] == '1' and floor > 0 then
  local remaining = tonumber(redis.call('HGET', KEYS[1], 'quotaRemaining') or '')
  if remaining and remaining < floor then
    local probeAt = tonumber(redis.call('HGET', KEYS[1], 'probeAt') or '0')
    if now >= probeAt then
      redis.call('HSET', KEYS[1], 'probeAt', now + tonumber(ARGV[10]))
      return {0, 0, 'probe', congestion, now, ''}
    end
    return {0, probeAt - now, 'quota', congestion, now, ''}
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(first[2]) - now), 'concurrency', congestion, now, ''}
end

local configured = tonumber(ARGV[4])
local rate = math.min(configured, tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[4]))
local burst = math.max(1, tonumber(ARGV[5]) * rate / configured)
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[5])
local refilledAt = tonumber(redis.call('HGET', KEYS[1], 'refilledAt') or now)
if now > refilledAt then
  tokens = tokens + (now - refilledAt) * rate / 1000
  refilledAt = now
end
tokens = math.min(burst, tokens)
if tokens < 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'refilledAt', refilledAt)
  return {0, math.ceil((1 - tokens) * 1000 / rate), 'rate', congestion, now, ''}
end

redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'refilledAt', refilledAt)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[11])
redis.call('PEXPIRE', KEYS[2], ARGV[11])
return {1, 0, 'granted', congestion, now, tostring(rate)}
`;

/**
 * Records the outcome of one request.
 * KEYS[1] budget hash of the registry host
 * ARGV[1] current time, or '' for the server clock
 * ARGV[2] request kind
 * ARGV[3] HTTP status of the response, or 0 when none arrived
 * ARGV[4] wait that the response's Retry-After asked for, or ''
 * ARGV[5] pause after a 429 without Retry-After
 * ARGV[6] longest pause: a longer Retry-After is cut to it
 * ARGV[7] RateLimit-Remaining of the response as a whole number, or ''
 * ARGV[8] time after which the keys of an idle host expire
 * ARGV[9] configured requests per second: the highest shared rate
 * ARGV[10] lowest shared rate that 429 responses can cut it to, in requests per second
 * ARGV[11] factor that a 429 applies to the shared rate, between 0 and 1
 * ARGV[12] requests per second that the shared rate regains per second of healthy responses
 * ARGV[13] minimum time between two cuts of the shared rate
 * A 429 sets notBefore to now plus its Retry-After, or plus ARGV[5] without one; a 503 with Retry-After
 * sets it the same way. notBefore only moves later. Both statuses add 1 to the kind's congestion count.
 *
 * The shared rate follows additive increase and multiplicative decrease. A 429 multiplies it by ARGV[11],
 * down to ARGV[10], unless it was cut less than ARGV[13] ago: the 429s of requests that were already in
 * flight cut it once. Any other response with a status below 500 raises it by ARGV[12] per second
 * elapsed since the later of the last cut's pause end and the last raise, up to ARGV[9]. A 5xx or a
 * request without a response leaves it alone. NOTE: idle time between two healthy responses counts as
 * healthy time, so a host unused for a while returns near its configured rate.
 * Returns {notBefore, congestion, now, rate}: notBefore is 0 when none was ever set, and rate is the
 * shared rate after this response.
 */
export const REPORT_SCRIPT = `
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local status = tonumber(ARGV[3])
local retryAfter = tonumber(ARGV[4])

local pause = nil
if status == 429 then
  pause = retryAfter or tonumber(ARGV[5])
elseif status == 503 and retryAfter then
  pause = retryAfter
end

local notBefore = tonumber(redis.call('HGET', KEYS[1], 'notBefore') or '0')
if pause then
  local pauseEnd = now + math.min(pause, tonumber(ARGV[6]))
  if pauseEnd > notBefore then
    notBefore = pauseEnd
    redis.call('HSET', KEYS[1], 'notBefore', notBefore)
  end
end

local field = 'congestion:' .. ARGV[2]
local congestion = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if status == 429 or status == 503 then
  congestion = redis.call('HINCRBY', KEYS[1], field, 1)
end

local maxRate = tonumber(ARGV[9])
local rate = math.min(maxRate, tonumber(redis.call('HGET', KEYS[1], 'rate') or ARGV[9]))
if status == 429 then
  local cutAt = tonumber(redis.call('HGET', KEYS[1], 'rateCutAt') or '')
  if not cutAt or now - cutAt >= tonumber(ARGV[13]) then
    rate = math.max(tonumber(ARGV[10]), rate * tonumber(ARGV[11]))
    redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'rateCutAt', now, 'rateAt', math.max(now, notBefore))
  end
elseif status > 0 and status < 500 and rate < maxRate then
  local rateAt = tonumber(redis.call('HGET', KEYS[1], 'rateAt') or now)
  if now > rateAt then
    rate = math.min(maxRate, rate + tonumber(ARGV[12]) * (now - rateAt) / 1000)
    redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'rateAt', now)
  end
end

if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'quotaRemaining', ARGV[7], 'quotaAt', now)
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return {notBefore, congestion, now, tostring(rate)}
`;

/**
 * Extends the leases of requests that are still running.
 * KEYS[1] sorted set of the leases in flight of one request kind
 * ARGV[1] current time, or '' for the server clock
 * ARGV[2] lease lifetime
 * ARGV[3] time after which the keys of an idle host expire
 * ARGV[4...] lease ids
 * A lease that expired and was dropped in the meantime is not recorded again (ZADD XX), so a worker
 * that was away too long cannot hold a place that another request has taken since.
 * Returns the number of leases extended.
 */
export const RENEW_SCRIPT = `
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local expiry = now + tonumber(ARGV[2])
local renewed = 0
for index = 4, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[index])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return renewed
`;
