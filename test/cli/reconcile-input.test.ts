import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { fleetEnv } from '../harness/workers.ts';
import { runCommand } from './run.ts';

/**
 * Input of `mirrorfleet reconcile` that would release every use of the cluster, and how it is rejected.
 * MIRRORFLEET_REDIS_URL points at a loopback socket that counts the connections it accepts and closes
 * them, so a test can check that a rejected command never reached Redis and so enqueued nothing.
 */

let listener: Server;
let connections = 0;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  listener = createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const address = listener.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  env = fleetEnv({ redisUrl: `redis://127.0.0.1:${port}`, keyPrefix: 'reconcile-input-test', mirrorRegistries: ['local=registry.test:5000'], insecureRegistries: [] });
});

afterAll(() => {
  listener?.close();
});

const RECONCILE = ['reconcile', '--cluster', 'stage', '--from-file', '-', '--wait'];

function pod(name: string, labels: Record<string, string>) {
  return { kind: 'Pod', metadata: { name, namespace: 'shop', labels }, spec: { containers: [{ name: 'app', image: 'registry.test:5000/app:1' }] } };
}

describe('reconcile input', () => {
  test.each([
    ['empty input', '', 'the input is empty (no line other than blank lines and # comments), and reconciling with it would release every use of the cluster'],
    ['blank input', '\n\n', 'the input is empty'],
    ['empty object', '{}', 'found an object with no kind and the keys (none)'],
    ['unknown object', '{"foo":1}', 'found an object with no kind and the keys "foo"'],
    ['items not an array', '{"items":5}', 'found an object with no kind and the keys "items"'],
    ['null items', '{"kind":"List","items":null}', 'the List has items null, not an array of pods'],
    ['empty array', '[]', 'found an array of 0 entries'],
    ['null', 'null', 'found null'],
    ['item without containers', '{"kind":"List","items":[{"foo":1}]}', 'items[0] ((no name)) has no spec.containers array'],
    ['empty pod list', '{"kind":"List","items":[]}', 'the pod list has no pods, and reconciling with it would release every use of the cluster; pass --allow-empty'],
  ])('%s exits 2 without connecting', async (_name, input, message) => {
    const before = connections;

    const run = await runCommand(RECONCILE, env, { input });

    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain(`mirrorfleet: invalid image list: ${message}`);
    expect(connections - before, 'connections to Redis').toBe(0);
  });

  test('allow-empty accepts an empty pod list', async () => {
    const before = connections;

    const run = await runCommand([...RECONCILE, '--allow-empty', '--timeout', '5'], env, { input: '{"kind":"List","items":[]}' });

    expect(run.stderr).not.toContain('invalid image list');
    expect(connections - before, 'connections to Redis').toBeGreaterThan(0);
  });

  test('invalid label value names the pod', async () => {
    const input = JSON.stringify({ kind: 'List', items: [pod('web-5f7', { app: 'Web UI' })] });

    const run = await runCommand([...RECONCILE, '--service-label', 'app'], env, { input });

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('pod shop/web-5f7 has label app="Web UI", which is not a valid service id even in lowercase');
  });

  test('pods without the label are counted', async () => {
    const input = JSON.stringify({ kind: 'List', items: [pod('web-1', { app: 'Web_UI' }), pod('job-1', {}), pod('job-2', { tier: 'batch' })] });

    const run = await runCommand([...RECONCILE, '--service-label', 'app', '--timeout', '5'], env, { input });

    expect(run.stderr).toContain('reconcile: 2 of 3 pods had no label app; their images are recorded as used by cluster stage (no service named)\n');
    expect(run.stderr).not.toContain('invalid');
  });
});
