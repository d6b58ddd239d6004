import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryError } from '../errors.ts';
import { REQUEST_KINDS, type GatePermit, type GateRequest, type RequestGate, type RequestKind, type RequestOutcome } from '../registry/retry.ts';
import { AimdController, ConcurrencyWindow, DEFAULT_AIMD_OPTIONS, type AimdOptions } from './aimd.ts';
import type { BudgetWaitReason, SharedBudget } from './budget.ts';
import { parseRateLimitRemaining } from './quota.ts';
import { currentRateLimitListener, type RateLimitWait, type WaitReason } from './waits.ts';

/**
 * The request gate of one registry host in one worker process. A request passes two stages before it
 * is sent:
 * 1. this process's adaptive concurrency window for the request's kind (AIMD, see aimd.ts);
 * 2. the host's budget in Redis, shared by the fleet (see budget.ts): the "not before" time, the pull
 *    quota floor, the requests in flight per kind, and the request rate.
 * Its outcome then feeds both: the window grows or shrinks, and a 429 or `Retry-After` pauses the host
 * for every worker at once.
 *
 * Inner code does not log: waits, window changes and quota readings go to `events` and to the job
 * listener of waits.ts.
 *
 * NOTE: a request that keeps a place while it waits for another one of the same kind and host (a blob
 * HEAD after a failed upload while the source blob stream is still open, when source and target are
 * the same host) can wait for itself when the window is full. `maxWaitMs` ends such a wait with an
 * error, which releases the places.
 */

export interface GateEvents {
  /** The concurrency window of a kind changed; also called once per kind when the gate is created. */
  onWindow?: (event: { registry: string; kind: RequestKind; limit: number }) => void;
  /** A request began or ended a wait. */
  onWait?: (wait: RateLimitWait) => void;
  /** A response carried `RateLimit-Remaining`. `paused` is true when pulls now wait for the quota. */
  onQuota?: (event: { registry: string; remaining: number; paused: boolean }) => void;
}

export interface RegistryGateOptions {
  budget: SharedBudget;
  events?: GateEvents;
  /** Maximum wait of one request before it fails with REGISTRY_RATE_LIMITED. Default 15 minutes. */
  maxWaitMs?: number;
  /** Maximum sleep between two budget checks while the fleet has the most requests in flight. Default 250 ms. */
  pollMs?: number;
  /** AIMD settings for every kind; `max` defaults to the host's `maxConcurrent`. */
  aimd?: Partial<AimdOptions>;
  /** Time in ms for the AIMD cooldown; tests pass a fake clock. */
  clock?: () => number;
}

export const DEFAULT_MAX_WAIT_MS = 15 * 60_000;
const DEFAULT_POLL_MS = 250;
/** Maximum sleep between two budget checks while pulls pause for the quota. */
const QUOTA_POLL_MS = 1_000;

export class RegistryGate implements RequestGate {
  readonly registry: string;
  readonly budget: SharedBudget;
  readonly maxWaitMs: number;
  private readonly pollMs: number;
  private readonly events: GateEvents;
  private readonly clock: () => number;
  private readonly windows = new Map<RequestKind, ConcurrencyWindow>();
  /** Highest congestion count seen per kind, to notice 429s that other workers received. */
  private readonly congestionSeen = new Map<RequestKind, number>();
  /** Leases of requests in flight per kind, renewed together by one timer. */
  private readonly held = new Map<RequestKind, Set<string>>();
  private renewal: NodeJS.Timeout | undefined;

  constructor(options: RegistryGateOptions) {
    this.budget = options.budget;
    this.registry = options.budget.registry;
    this.maxWaitMs = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    this.pollMs = options.pollMs ?? DEFAULT_POLL_MS;
    this.events = options.events ?? {};
    this.clock = options.clock ?? Date.now;

    const max = options.aimd?.max ?? options.budget.limits.maxConcurrent;
    for (const kind of REQUEST_KINDS) {
      const aimd: Partial<AimdOptions> = {
        ...options.aimd,
        max,
        initial: Math.min(options.aimd?.initial ?? DEFAULT_AIMD_OPTIONS.initial, max),
        // The time of an upload grows with its body, so it is no measure of load.
        ...(kind === 'upload' ? { latency: false as const } : {}),
      };
      const window = new ConcurrencyWindow(new AimdController(aimd));
      this.windows.set(kind, window);
      this.held.set(kind, new Set());
      this.events.onWindow?.({ registry: this.registry, kind, limit: window.controller.limit });
    }
  }

  /** Returns the current concurrency window of `kind` in this process. */
  windowLimit(kind: RequestKind): number {
    return this.window(kind).controller.limit;
  }

  /**
   * Waits until `request` may be sent and returns its permit. A manifest GET (a request with a `probe`)
   * also waits while the pull quota is below the floor, and sends a probe from time to time to read it.
   * @throws RegistryError (REGISTRY_RATE_LIMITED, retryable) when the wait would pass `maxWaitMs`.
   */
  async acquire(request: GateRequest): Promise<GatePermit> {
    const deadline = Date.now() + this.maxWaitMs;
    const window = this.window(request.kind);
    const waits = new WaitReporter(this.registry, request.kind, this.events.onWait);

    await this.takeWindow(window, request, deadline, waits);
    const leaseId = randomUUID();
    let spendsPull = request.probe !== undefined;
    let rateCut = true;
    for (;;) {
      let decision;
      try {
        decision = await this.budget.acquire(request.kind, leaseId, spendsPull);
      } catch (error) {
        window.give();
        waits.end();
        throw error;
      }
      this.noteCongestion(request.kind, decision.congestion);
      if (decision.granted) {
        rateCut = decision.rateCut;
        break;
      }

      if (decision.reason === 'probe' && request.probe) {
        // The probe is a manifest request too, so it needs the place in the window that this request has taken.
        waits.begin('quota', 0);
        window.give();
        const headers = await request.probe().catch(() => undefined);
        // Docker Hub sends no RateLimit-Remaining for an image whose pulls it does not count.
        if (headers && parseRateLimitRemaining(headers['ratelimit-remaining']) === undefined) spendsPull = false;
        await this.takeWindow(window, request, deadline, waits);
        continue;
      }

      const reason = waitReason(decision.reason);
      const waitMs = Math.max(1, Math.min(decision.waitMs, this.pollLimit(reason)));
      if (Date.now() + waitMs > deadline) {
        window.give();
        waits.end();
        throw this.waitTooLong(request, reason);
      }
      waits.begin(reason, decision.waitMs);
      await sleep(waitMs);
    }

    waits.end();
    return this.permit(request.kind, window, leaseId, rateCut);
  }

  /** Stops renewing leases. Requests still in flight keep their places until their leases expire. */
  close(): void {
    if (this.renewal) clearInterval(this.renewal);
    this.renewal = undefined;
  }

  /**
   * Returns the longest sleep before a waiting request checks the budget again. A place in flight can
   * free up at any time, and so can the pull quota, because another worker's probe may read it
   * recovered long before the next probe of this request is due.
   */
  private pollLimit(reason: WaitReason): number {
    if (reason === 'concurrency') return this.pollMs;
    if (reason === 'quota') return QUOTA_POLL_MS;
    return Number.POSITIVE_INFINITY;
  }

  private window(kind: RequestKind): ConcurrencyWindow {
    return this.windows.get(kind)!;
  }

  private async takeWindow(window: ConcurrencyWindow, request: GateRequest, deadline: number, waits: WaitReporter): Promise<void> {
    if (window.tryTake()) return;
    waits.begin('window', 0);
    await window.take(Math.max(0, deadline - Date.now()), () => {
      waits.end();
      return this.waitTooLong(request, 'window');
    });
  }

  /** `rateCut` is true when the budget granted the request while the shared rate was below the configured one. */
  private permit(kind: RequestKind, window: ConcurrencyWindow, leaseId: string, rateCut: boolean): GatePermit {
    this.hold(kind, leaseId);
    let reported = false;
    let released = false;
    return {
      report: async (outcome) => {
        if (reported) return;
        reported = true;
        await this.record(kind, window, outcome, rateCut);
      },
      release: () => {
        if (released) return;
        released = true;
        window.give();
        this.held.get(kind)!.delete(leaseId);
        this.budget.release(kind, leaseId).catch(() => undefined);
      },
    };
  }

  /**
   * Feeds one outcome to the window and to the shared budget. A failure to reach Redis here loses one
   * signal and never fails the request, whose response has already arrived.
   *
   * A healthy response is a status below 500 other than 429, with neither `Retry-After` nor
   * `RateLimit-Remaining`. It is not sent to Redis when the shared rate was not cut at the time the
   * request was granted, because REPORT_SCRIPT changes nothing for it then: it only raises a cut rate.
   * That saves one Redis round trip per request. A cut that another worker makes meanwhile is raised
   * by the next healthy response granted after it, because the raise grows with the time since the
   * cut, not with the number of responses.
   */
  private async record(kind: RequestKind, window: ConcurrencyWindow, outcome: RequestOutcome, rateCut: boolean): Promise<void> {
    this.changeWindow(kind, window, () => window.controller.onResponse(outcome.status, outcome.latencyMs, this.clock()));

    const quotaRemaining = parseRateLimitRemaining(outcome.headers['ratelimit-remaining']);
    const healthy = outcome.status !== undefined && outcome.status < 500 && outcome.status !== 429 && outcome.retryAfterMs === undefined;
    if (healthy && quotaRemaining === undefined && !rateCut) return;
    try {
      const report = await this.budget.report({ kind, status: outcome.status, retryAfterMs: outcome.retryAfterMs, quotaRemaining });
      // This worker has already reacted to its own 429 or 503, so the count it raised is not news.
      this.congestionSeen.set(kind, Math.max(this.congestionSeen.get(kind) ?? 0, report.congestion));
    } catch {
      // Redis unreachable: the next acquire notices.
    }

    if (quotaRemaining !== undefined) {
      const floor = this.budget.limits.pullQuotaFloor;
      this.events.onQuota?.({ registry: this.registry, remaining: quotaRemaining, paused: floor > 0 && quotaRemaining < floor });
    }
  }

  /** Cuts the window of `kind` when the fleet's congestion count grew since this worker last looked. */
  private noteCongestion(kind: RequestKind, congestion: number): void {
    const seen = this.congestionSeen.get(kind);
    if (seen !== undefined && congestion <= seen) return;
    this.congestionSeen.set(kind, congestion);
    if (seen === undefined) return;
    const window = this.window(kind);
    this.changeWindow(kind, window, () => window.controller.onCongestion(this.clock()));
  }

  private changeWindow(kind: RequestKind, window: ConcurrencyWindow, change: () => string): void {
    if (change() === 'unchanged') return;
    window.admit();
    this.events.onWindow?.({ registry: this.registry, kind, limit: window.controller.limit });
  }

  private hold(kind: RequestKind, leaseId: string): void {
    this.held.get(kind)!.add(leaseId);
    if (this.renewal) return;
    this.renewal = setInterval(() => this.renewHeld(), Math.max(10, Math.floor(this.budget.timings.leaseTtlMs / 3)));
    this.renewal.unref();
  }

  private renewHeld(): void {
    let any = false;
    for (const [kind, leases] of this.held) {
      if (leases.size === 0) continue;
      any = true;
      this.budget.renew(kind, [...leases]).catch(() => undefined);
    }
    if (!any) this.close();
  }

  private waitTooLong(request: GateRequest, reason: WaitReason): RegistryError {
    const seconds = Math.round(this.maxWaitMs / 1000);
    return new RegistryError(
      'REGISTRY_RATE_LIMITED',
      `gave up waiting for the request budget of ${this.registry} while ${request.operation}: ${WAIT_DESCRIPTIONS[reason]}, ` +
        `and the wait would pass the limit of ${seconds} s (rateLimits.maxWaitSeconds); the job can be retried later`,
      { registry: this.registry, operation: request.operation, retryable: true },
    );
  }
}

const WAIT_DESCRIPTIONS: Record<WaitReason, string> = {
  window: 'this worker has the most requests of this kind in flight that its concurrency window allows',
  'not-before': 'the registry asked every client to pause (429 or Retry-After)',
  quota: 'the pull quota (RateLimit-Remaining) is below the configured floor',
  concurrency: 'the fleet has the most requests of this kind in flight that the configured limit allows',
  rate: 'the fleet has spent its requests per second',
};

function waitReason(reason: BudgetWaitReason): WaitReason {
  return reason === 'probe' ? 'quota' : reason;
}

/**
 * Reports the waits of one request: a `start` when it begins to wait for a reason, and an `end` with the
 * time waited when the reason changes or the wait is over.
 */
class WaitReporter {
  private readonly registry: string;
  private readonly kind: RequestKind;
  private readonly onWait: ((wait: RateLimitWait) => void) | undefined;
  private readonly listener = currentRateLimitListener();
  private current: { reason: WaitReason; since: number } | undefined;

  constructor(registry: string, kind: RequestKind, onWait: ((wait: RateLimitWait) => void) | undefined) {
    this.registry = registry;
    this.kind = kind;
    this.onWait = onWait;
  }

  begin(reason: WaitReason, expectedMs: number): void {
    if (this.current?.reason === reason) return;
    this.end();
    this.current = { reason, since: Date.now() };
    this.emit({ registry: this.registry, kind: this.kind, reason, phase: 'start', waitMs: expectedMs });
  }

  end(): void {
    if (!this.current) return;
    const { reason, since } = this.current;
    this.current = undefined;
    this.emit({ registry: this.registry, kind: this.kind, reason, phase: 'end', waitMs: Date.now() - since });
  }

  private emit(wait: RateLimitWait): void {
    this.onWait?.(wait);
    this.listener?.(wait);
  }
}
