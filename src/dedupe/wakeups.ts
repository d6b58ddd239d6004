import type { Redis } from 'ioredis';
import type { LockWakeups } from './lock.ts';

/**
 * Wakes the lock waiters of one process when a lock is released anywhere in the fleet. The release
 * script publishes the lock key on the channel `<prefix>:lock-released`, and one subscriber connection
 * per process ends the pause of every waiter of that key. Without it, a waiter notices a release only
 * at its next poll, up to half a second later, and each job that waits on several blobs of an image
 * pays that delay once per blob.
 *
 * A message that is lost (the subscriber reconnecting) costs only that delay: waiters keep polling.
 */
export class LockReleaseListener implements LockWakeups {
  readonly channel: string;
  private readonly subscriber: Redis;
  private readonly waiting = new Map<string, Set<() => void>>();

  private constructor(subscriber: Redis, channel: string) {
    this.subscriber = subscriber;
    this.channel = channel;
    subscriber.on('message', (messageChannel: string, key: string) => {
      if (messageChannel !== channel) return;
      const waiters = this.waiting.get(key);
      if (!waiters) return;
      for (const wake of [...waiters]) wake();
    });
  }

  /**
   * Subscribes a duplicate of `redis` to the release channel of `keyPrefix`, without waiting for Redis:
   * the subscription starts when the connection is ready, and is renewed after every reconnect.
   * Connection errors of the duplicate are not reported here: the process's main connection reports
   * Redis outages.
   */
  static start(redis: Redis, keyPrefix: string): LockReleaseListener {
    const subscriber = redis.duplicate();
    subscriber.on('error', () => undefined);
    const listener = new LockReleaseListener(subscriber, `${keyPrefix}:lock-released`);
    subscriber.subscribe(listener.channel).catch(() => undefined);
    return listener;
  }

  pause(key: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.waiting.get(key);
      if (!waiters) {
        waiters = new Set();
        this.waiting.set(key, waiters);
      }
      const set = waiters;
      const wake = () => {
        clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0 && this.waiting.get(key) === set) this.waiting.delete(key);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      set.add(wake);
    });
  }

  /** Closes the subscriber connection; pauses still running end at their time. */
  close(): void {
    this.subscriber.disconnect();
  }
}
