import type { Redis } from 'ioredis';
import { Script } from '../refcounts/scripts.ts';
import type { RequestKind } from '../registry/retry.ts';
import { ACQUIRE_SCRIPT, RENEW_SCRIPT, REPORT_SCRIPT } from './scripts.ts';

/**
 * The request budget of one registry host, kept in Redis and shared by every worker of the fleet. It
 * has a request rate and a number of requests in flight per request kind. A 429 or a `Retry-After`
 * sets a "not before" time for the host, and pulls pause while the pull quota is below a floor. See
 * scripts.ts for the layout of the keys.
 */

/** Limits of one registry host. */
export interface HostLimits {
  /** Requests per second that the fleet sends on average; a decimal number greater than 0. */
  requestsPerSecond: number;
  /** Requests the fleet may send at once after an idle time (the token bucket's size). */
  burst: number;
  /** Requests of each kind (manifest reads, blob reads, uploads) in flight at once, fleet-wide. */
  maxConcurrent: number;
  /** Manifest GETs pause while the host's last `RateLimit-Remaining` is below this; 0 turns it off. */
  pullQuotaFloor: number;
  /**
   * Lowest request rate that 429 responses can cut the shared rate to. Default a tenth of
   * `requestsPerSecond`; it is never above `requestsPerSecond`.
   */
  minRequestsPerSecond?: number;
  /**
   * Requests per second that the shared rate regains per second of healthy responses after a cut.
   * Default `requestsPerSecond` / 60, so a rate cut in half returns to the configured one after 30 s.
   * NOTE: the default is an estimate; no registry publishes how fast its limit forgives.
   */
  rateRecoveryPerSecond?: number;
}

/** Durations of the budget, in milliseconds. */
export interface BudgetTimings {
  /** Lifetime of a lease on a place in flight; the holder renews it, so only a dead worker's lease expires. */
  leaseTtlMs: number;
  /** Time between two quota probes while pulls pause. */
  quotaProbeIntervalMs: number;
  /** Pause of the whole host after a 429 without `Retry-After`. */
  pauseAfter429Ms: number;
  /** Maximum pause that a `Retry-After` sets; a longer one is cut to this. */
  maxPauseMs: number;
  /** Time after which the keys of a host that no request used expire. */
  idleExpiryMs: number;
  /** Minimum time between two cuts of the shared rate, so that one burst of 429 responses cuts it once. */
  rateCutCooldownMs: number;
}

export const DEFAULT_BUDGET_TIMINGS: BudgetTimings = {
  leaseTtlMs: 60_000,
  quotaProbeIntervalMs: 30_000,
  pauseAfter429Ms: 2_000,
  maxPauseMs: 10 * 60_000,
  idleExpiryMs: 24 * 3_600_000,
  rateCutCooldownMs: 1_000,
};

/** Factor that a 429 applies to the shared request rate. */
export const RATE_DECREASE = 0.5;

/** Why a request may not start yet. With `probe`, the caller sends a quota probe first. */
export type BudgetWaitReason = 'not-before' | 'quota' | 'probe' | 'concurrency' | 'rate';

export type BudgetDecision =
  | {
      granted: true;
      congestion: number;
      now: number;
      /** True while 429 responses keep the shared request rate below the configured one. */
      rateCut: boolean;
    }
  | { granted: false; reason: BudgetWaitReason; waitMs: number; congestion: number; now: number };

export interface BudgetReport {
  /** Time before which no request to the host starts; 0 when none was ever set. */
  notBefore: number;
  /** Number of 429 and 503 responses to requests of the reported kind so far. */
  congestion: number;
  /** Requests per second that the fleet keeps now: the configured rate, or less after 429 responses. */
  requestsPerSecond: number;
}

export interface ReportedOutcome {
  kind: RequestKind;
  /** HTTP status, or undefined when no response arrived. */
  status: number | undefined;
  retryAfterMs: number | undefined;
  /** `RateLimit-Remaining` of the response, when it had one. */
  quotaRemaining: number | undefined;
}

export interface SharedBudgetOptions {
  redis: Redis;
  /** Key prefix of the fleet (`redis.keyPrefix`). */
  keyPrefix: string;
  registry: string;
  limits: HostLimits;
  timings?: Partial<BudgetTimings>;
  /** Current time in ms; without it the scripts use the Redis server clock. Tests pass a fake clock. */
  clock?: () => number;
}

const SCRIPTS = { acquire: new Script(ACQUIRE_SCRIPT), report: new Script(REPORT_SCRIPT), renew: new Script(RENEW_SCRIPT) };

/**
 * Returns the Redis keys of a host's budget. The host sits in braces, a Redis Cluster hash tag, so the
 * keys that one script touches share a slot (a prefix with a hash tag of its own wins, which keeps
 * them together too).
 */
export function budgetKeys(keyPrefix: string, registry: string): { state: string; inFlight(kind: RequestKind): string } {
  const base = `${keyPrefix}:ratelimit:{${registry}}`;
  return { state: `${base}:state`, inFlight: (kind) => `${base}:inflight:${kind}` };
}

export class SharedBudget {
  readonly registry: string;
  readonly limits: HostLimits;
  readonly timings: BudgetTimings;
  private readonly redis: Redis;
  private readonly keys: ReturnType<typeof budgetKeys>;
  private readonly clock: (() => number) | undefined;

  constructor(options: SharedBudgetOptions) {
    this.redis = options.redis;
    this.registry = options.registry;
    this.limits = options.limits;
    this.timings = { ...DEFAULT_BUDGET_TIMINGS, ...options.timings };
    this.keys = budgetKeys(options.keyPrefix, options.registry);
    this.clock = options.clock;
  }

  /** Takes a place for one request of `kind` under `leaseId`, or returns why it must wait and how long. */
  async acquire(kind: RequestKind, leaseId: string, spendsPullQuota: boolean): Promise<BudgetDecision> {
    const { limits, timings } = this;
    const reply = (await SCRIPTS.acquire.run(
      this.redis,
      [this.keys.state, this.keys.inFlight(kind)],
      [
        this.now(),
        leaseId,
        timings.leaseTtlMs,
        limits.requestsPerSecond,
        limits.burst,
        limits.maxConcurrent,
        kind,
        spendsPullQuota ? 1 : 0,
        limits.pullQuotaFloor,
        timings.quotaProbeIntervalMs,
        timings.idleExpiryMs,
      ],
    )) as [number, number, string, number, number, string];
    const [granted, waitMs, reason, congestion, now, rate] = reply;
    if (granted === 1) return { granted: true, congestion, now, rateCut: Number(rate) < limits.requestsPerSecond };
    return { granted: false, reason: reason as BudgetWaitReason, waitMs, congestion, now };
  }

  /**
   * Records what became of a request: a 429 or `Retry-After` pauses the host, a 429 cuts the shared
   * request rate and a healthy response raises it again (see REPORT_SCRIPT), and a quota reading is kept.
   */
  async report(outcome: ReportedOutcome): Promise<BudgetReport> {
    const { limits, timings } = this;
    const reply = (await SCRIPTS.report.run(
      this.redis,
      [this.keys.state],
      [
        this.now(),
        outcome.kind,
        outcome.status ?? 0,
        outcome.retryAfterMs === undefined ? '' : Math.round(outcome.retryAfterMs),
        timings.pauseAfter429Ms,
        timings.maxPauseMs,
        outcome.quotaRemaining === undefined ? '' : outcome.quotaRemaining,
        timings.idleExpiryMs,
        limits.requestsPerSecond,
        Math.min(limits.requestsPerSecond, limits.minRequestsPerSecond ?? limits.requestsPerSecond / 10),
        RATE_DECREASE,
        limits.rateRecoveryPerSecond ?? limits.requestsPerSecond / 60,
        timings.rateCutCooldownMs,
      ],
    )) as [number, number, number, string];
    return { notBefore: reply[0], congestion: reply[1], requestsPerSecond: Number(reply[3]) };
  }

  /** Frees the place of a lease. */
  async release(kind: RequestKind, leaseId: string): Promise<void> {
    await this.redis.zrem(this.keys.inFlight(kind), leaseId);
  }

  /** Extends the leases of requests still running; returns how many were still recorded. See RENEW_SCRIPT. */
  async renew(kind: RequestKind, leaseIds: readonly string[]): Promise<number> {
    if (leaseIds.length === 0) return 0;
    const args = [this.now(), this.timings.leaseTtlMs, this.timings.idleExpiryMs, ...leaseIds];
    return (await SCRIPTS.renew.run(this.redis, [this.keys.inFlight(kind)], args)) as number;
  }

  /** Returns the number of leases of `kind` in flight, expired ones included until the next acquire drops them. */
  async inFlight(kind: RequestKind): Promise<number> {
    return this.redis.zcard(this.keys.inFlight(kind));
  }

  private now(): number | string {
    return this.clock ? Math.floor(this.clock()) : '';
  }
}
