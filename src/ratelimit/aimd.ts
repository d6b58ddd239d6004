/**
 * Adaptive concurrency by additive increase and multiplicative decrease (AIMD), the rule of TCP
 * congestion avoidance (RFC 5681, section 3.1). The window of requests in flight grows by one after
 * a window's worth of healthy responses, and halves on a sign of overload. Signs of overload are a
 * 429 or 503, the same statuses seen by another worker (through the shared budget's congestion count),
 * and response times that stay well above their usual level.
 */

export interface AimdOptions {
  /** Window before any response arrived. */
  initial: number;
  min: number;
  max: number;
  /** Growth after each window's worth of healthy responses (`limit` of them). */
  increase: number;
  /** Factor applied to the window on a sign of overload, between 0 and 1. */
  decrease: number;
  /** Minimum time in ms between two cuts, so that one burst of 429 responses cuts the window once. */
  cooldownMs: number;
  /** Rising response times as a sign of overload; false turns this off, as for uploads, whose time grows with the body. */
  latency: LatencySignal | false;
}

/**
 * A response counts as slow when its time exceeds `factor` times the baseline, an exponentially weighted
 * average of earlier response times, and the baseline by at least `minExtraMs`. The window is cut after
 * `consecutive` slow responses in a row, so one slow response (a token request, a cold cache) does not
 * cut it.
 */
export interface LatencySignal {
  factor: number;
  minExtraMs: number;
  consecutive: number;
  /** Responses measured before the baseline is trusted. */
  minSamples: number;
  /** Weight of each new response time in the baseline, between 0 and 1. */
  baselineWeight: number;
}

export const DEFAULT_LATENCY_SIGNAL: LatencySignal = { factor: 2, minExtraMs: 100, consecutive: 3, minSamples: 10, baselineWeight: 0.05 };

export const DEFAULT_AIMD_OPTIONS: AimdOptions = {
  initial: 4,
  min: 1,
  max: 16,
  increase: 1,
  decrease: 0.5,
  cooldownMs: 1_000,
  latency: DEFAULT_LATENCY_SIGNAL,
};

/** Effect of one response on the window. */
export type WindowChange = 'increased' | 'decreased' | 'unchanged';

export class AimdController {
  readonly options: AimdOptions;
  private current: number;
  private lastCut = Number.NEGATIVE_INFINITY;
  /** Healthy responses since the window last changed. */
  private healthy = 0;
  private baseline: number | undefined;
  private samples = 0;
  private slowInARow = 0;

  constructor(options: Partial<AimdOptions> = {}) {
    const merged = { ...DEFAULT_AIMD_OPTIONS, ...options };
    if (!(merged.min >= 1 && merged.max >= merged.min)) throw new RangeError(`invalid AIMD bounds: min ${merged.min}, max ${merged.max}; expected 1 <= min <= max`);
    if (!(merged.decrease > 0 && merged.decrease < 1)) throw new RangeError(`invalid AIMD decrease ${merged.decrease}; expected a factor between 0 and 1`);
    this.options = merged;
    this.current = clamp(merged.initial, merged.min, merged.max);
  }

  /** Requests that may be in flight at once: the window rounded down, at least `min`. */
  get limit(): number {
    return Math.max(this.options.min, Math.floor(this.current));
  }

  /** The window as a decimal number, before rounding. */
  get window(): number {
    return this.current;
  }

  /**
   * Records one response. A 429 or 503 cuts the window, and so does a run of slow responses when the
   * latency signal is on. Any other status grows it, and a request that failed without a response
   * changes nothing, because a broken connection is weak evidence of the registry's load.
   * @param now time in ms, for the cooldown between cuts.
   */
  onResponse(status: number | undefined, latencyMs: number, now: number): WindowChange {
    if (status === undefined) return 'unchanged';
    if (status === 429 || status === 503) return this.onCongestion(now);
    if (this.isSlow(latencyMs)) return this.onCongestion(now);
    this.healthy += 1;
    if (this.healthy < this.limit || this.current >= this.options.max) return 'unchanged';
    this.healthy = 0;
    this.current = Math.min(this.options.max, this.current + this.options.increase);
    return 'increased';
  }

  /** Cuts the window on a sign of overload, unless another cut happened within the cooldown. */
  onCongestion(now: number): WindowChange {
    if (now - this.lastCut < this.options.cooldownMs) return 'unchanged';
    this.lastCut = now;
    this.slowInARow = 0;
    this.healthy = 0;
    const before = this.limit;
    this.current = Math.max(this.options.min, this.current * this.options.decrease);
    return this.limit < before ? 'decreased' : 'unchanged';
  }

  /** Measures one response time against the baseline; true when it completes a run of slow responses. */
  private isSlow(latencyMs: number): boolean {
    const signal = this.options.latency;
    if (signal === false) return false;

    const baseline = this.baseline;
    this.samples += 1;
    this.baseline = baseline === undefined ? latencyMs : baseline + signal.baselineWeight * (latencyMs - baseline);
    if (baseline === undefined || this.samples <= signal.minSamples) return false;

    const slow = latencyMs > baseline * signal.factor && latencyMs - baseline >= signal.minExtraMs;
    this.slowInARow = slow ? this.slowInARow + 1 : 0;
    return this.slowInARow >= signal.consecutive;
  }
}

/**
 * Requests of one kind in flight in this process, held to an AIMD controller's limit. Waiters are let
 * in first come, first served, as places free up or the window grows.
 */
export class ConcurrencyWindow {
  readonly controller: AimdController;
  private inFlight = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(controller: AimdController) {
    this.controller = controller;
  }

  /** Requests holding a place now. */
  get active(): number {
    return this.inFlight;
  }

  /** Returns true and takes a place when one is free and no other request waits for it. */
  tryTake(): boolean {
    if (this.waiters.length > 0 || this.inFlight >= this.controller.limit) return false;
    this.inFlight += 1;
    return true;
  }

  /**
   * Takes a place, waiting for one when the window is full.
   * @throws the error from `onTimeout` when no place frees up within `timeoutMs`.
   */
  async take(timeoutMs: number, onTimeout: () => Error): Promise<void> {
    if (this.tryTake()) return;
    await new Promise<void>((resolve, reject) => {
      const admit = () => {
        clearTimeout(timer);
        this.inFlight += 1;
        resolve();
      };
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(admit);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(onTimeout());
      }, timeoutMs);
      this.waiters.push(admit);
    });
  }

  /** Gives a place back and lets waiters in while the window has room. */
  give(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    this.admit();
  }

  /** Lets waiters in after the window grew. */
  admit(): void {
    while (this.waiters.length > 0 && this.inFlight < this.controller.limit) this.waiters.shift()!();
  }
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}
