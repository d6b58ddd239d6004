import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import type { HttpTransport } from '../../src/registry/http.ts';
import { installLoopbackGuard, type LoopbackGuard } from '../net/loopback-guard.ts';
import { loopbackTransport } from './setup.ts';

/** The part of a cloud API stand-in that `setUpStandIn` uses. */
export interface StandInServer {
  /** Requests the stand-in did not expect, each rejected with a 400 response. */
  readonly unexpected: string[];
  close(): Promise<void>;
}

/** What `setUpStandIn` passes to its callback before each test. */
export interface StandInContext<S extends StandInServer> {
  /** Transport from `loopbackTransport`, shared by all tests of the file. */
  transport: HttpTransport;
  /** Stand-in started for the running test. */
  standIn: S;
}

/**
 * Registers hooks in the calling test file. The loopback guard and a loopback transport last for the
 * whole file, and each test gets a new stand-in from `start`, which `onStart` receives with the transport.
 * After each test the stand-in is closed. The test then fails if the stand-in received a request it did
 * not expect, a socket tried to leave loopback, or a host name reached DNS. `apiName` names the stand-in
 * in the failure message. Call it at the top level of the file.
 */
export function setUpStandIn<S extends StandInServer>(apiName: string, start: () => Promise<S>, onStart: (context: StandInContext<S>) => void): void {
  let guard: LoopbackGuard;
  let transport: HttpTransport;
  let standIn: S;

  beforeAll(() => {
    guard = installLoopbackGuard();
    transport = loopbackTransport();
  });

  afterAll(async () => {
    await transport.close();
    guard.restore();
  });

  beforeEach(async () => {
    standIn = await start();
    onStart({ transport, standIn });
  });

  afterEach(async () => {
    await standIn.close();
    expect(standIn.unexpected, `requests the ${apiName} stand-in did not expect`).toEqual([]);
    expect(guard.escapes, 'connections to anything but loopback').toEqual([]);
    expect(guard.lookups, 'DNS lookups').toEqual([]);
  });
}
