import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { freePort, spawn, stopProcess, waitFor } from '../harness/processes.ts';

/** Redis processes started by a test, on loopback, with their files in one temporary directory. */
export interface RedisServers {
  ports: number[];
  stop(): Promise<void>;
}

const NO_PERSISTENCE = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];

/** Runs `probe` against a fresh client on `port` until it returns true. */
async function waitForServer(port: number, what: string, probe: (client: Redis) => Promise<boolean>, password?: string): Promise<void> {
  await waitFor(what, async () => {
    const client = new Redis({ host: '127.0.0.1', port, password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    // Refused connections are expected until the server listens.
    client.on('error', () => undefined);
    try {
      await client.connect();
      return await probe(client);
    } finally {
      client.disconnect();
    }
  });
}

async function stopAll(children: ChildProcess[], dir: string): Promise<void> {
  await Promise.all(children.map((child) => stopProcess(child)));
  await rm(dir, { recursive: true, force: true });
}

/**
 * Starts a primary that requires `password`, and one Sentinel process that monitors it as `masterName`.
 * `ports` is `[primary, sentinel]`.
 */
export async function startSentinelGroup(masterName: string, password: string): Promise<RedisServers> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-sentinel-'));
  const primaryPort = await freePort();
  const sentinelPort = await freePort();
  const children: ChildProcess[] = [];
  try {
    children.push(spawn('redis-server', ['--port', String(primaryPort), ...NO_PERSISTENCE, '--dir', dir, '--requirepass', password], { stdio: 'ignore' }));
    await waitForServer(primaryPort, `redis primary on port ${primaryPort}`, async (client) => (await client.ping()) === 'PONG', password);

    // Sentinel rewrites its configuration file, so it needs a file of its own in a writable directory.
    const sentinelConfig = join(dir, 'sentinel.conf');
    await writeFile(
      sentinelConfig,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${primaryPort} 1`,
        `sentinel auth-pass ${masterName} ${password}`,
        `sentinel down-after-milliseconds ${masterName} 5000`,
        '',
      ].join('\n'),
    );
    children.push(spawn('redis-server', [sentinelConfig, '--sentinel'], { stdio: 'ignore' }));
    await waitForServer(sentinelPort, `redis sentinel on port ${sentinelPort}`, async (client) => {
      const address = (await client.call('SENTINEL', 'get-master-addr-by-name', masterName)) as string[] | null;
      return address?.[1] === String(primaryPort);
    });
  } catch (error) {
    await stopAll(children, dir);
    throw error;
  }
  return { ports: [primaryPort, sentinelPort], stop: () => stopAll(children, dir) };
}

/** Starts three cluster-enabled servers without replicas and joins them into one Redis Cluster. */
export async function startCluster(): Promise<RedisServers> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-cluster-'));
  const ports: number[] = [];
  const children: ChildProcess[] = [];
  try {
    for (let node = 0; node < 3; node += 1) {
      const port = await freePort();
      // The bus port defaults to port + 10000, which may be taken or out of range, so pick a free one.
      const busPort = await freePort();
      const nodeDir = join(dir, `node-${node}`);
      await mkdir(nodeDir);
      ports.push(port);
      children.push(
        spawn(
          'redis-server',
          ['--port', String(port), '--cluster-port', String(busPort), ...NO_PERSISTENCE, '--dir', nodeDir, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
          { stdio: 'ignore' },
        ),
      );
    }
    for (const port of ports) await waitForServer(port, `cluster node on port ${port}`, async (client) => (await client.ping()) === 'PONG');

    await execa('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (const port of ports) {
      await waitForServer(port, `cluster state ok on port ${port}`, async (client) => ((await client.call('CLUSTER', 'INFO')) as string).includes('cluster_state:ok'));
    }
  } catch (error) {
    await stopAll(children, dir);
    throw error;
  }
  return { ports, stop: () => stopAll(children, dir) };
}
