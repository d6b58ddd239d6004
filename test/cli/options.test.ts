import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import { CLI, fleetEnv } from '../harness/workers.ts';
import { freePort } from '../harness/processes.ts';
import { COMMAND_USAGE } from '../../src/cli/usage.ts';
import { runCommand } from './run.ts';

/**
 * Mistakes on the command line, and how they are reported. MIRRORFLEET_REDIS_URL points at a loopback
 * socket that counts the connections it accepts, so a test can check that a rejected command never
 * connected to Redis.
 */

let listener: Server;
let connections = 0;
let env: NodeJS.ProcessEnv;
let folder: string;

beforeAll(async () => {
  listener = createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const address = listener.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  env = fleetEnv({ redisUrl: `redis://127.0.0.1:${port}`, keyPrefix: 'options-test', mirrorRegistries: ['local=registry.test:5000'], insecureRegistries: [] });
  folder = await mkdtemp(join(tmpdir(), 'mirrorfleet-options-'));
});

afterAll(async () => {
  listener?.close();
  if (folder) await rm(folder, { recursive: true, force: true });
});

describe('option mistakes', () => {
  test('mistyped option suggests the closest', async () => {
    const before = connections;

    const run = await runCommand(['mirror', 'nginx:1.27', '--registry', 'local', '--servce', 'web'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toBe('mirrorfleet: unknown option --servce; did you mean --service?\nrun "mirrorfleet mirror --help" for usage\n');
    expect(connections - before, 'connections to Redis').toBe(0);
  });

  test('distant option gets no suggestion', async () => {
    const run = await runCommand(['sweep', '--zzz'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toBe('mirrorfleet: unknown option --zzz\nrun "mirrorfleet sweep --help" for usage\n');
  });

  test('option without value is named', async () => {
    const last = await runCommand(['mirror', 'nginx:1.27', '--registry', 'local', '--service'], env);
    const beforeOption = await runCommand(['mirror', 'nginx:1.27', '--service', '--registry', 'local'], env);

    expect(last.code).toBe(2);
    expect(last.stderr).toContain('mirrorfleet: --service needs a value');
    expect(last.stderr).toContain('run "mirrorfleet mirror --help" for usage');
    expect(beforeOption.code).toBe(2);
    expect(beforeOption.stderr).toContain('mirrorfleet: --service needs a value');
  });

  test('repeated single-value option is rejected', async () => {
    const before = connections;

    const run = await runCommand(['mirror', 'nginx:1.27', '--registry', 'local', '--registry', 'other', '--service', 'web'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('mirrorfleet: --registry is given more than once; give it once');
    expect(connections - before, 'connections to Redis').toBe(0);
  });

  test('repeated --platform is accepted', async () => {
    const run = await runCommand(['mirror', 'nginx:1.27', '--registry', 'local', '--service', 'web', '--platform', 'linux/amd64', '--platform', 'linux/arm64', '--timeout', 'x'], env);

    // The --timeout check comes after the options were parsed, so reaching it shows --platform passed.
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('invalid --timeout "x"');
  });

  test('timeout with a unit names seconds', async () => {
    const run = await runCommand(['mirror', 'nginx:1.27', '--registry', 'local', '--service', 'web', '--timeout', '5m'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('invalid --timeout "5m": expected a whole number of seconds, at least 1');
  });
});

describe('request problems', () => {
  test('fields are named by their options', async () => {
    const before = connections;

    const run = await runCommand(['mirror', 'nginx:1.27', '--registry', 'local', '--platform', 'linux/aarch64', '--mode', 'service'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('missing --service: service is required when mode is "service"');
    expect(run.stderr).toContain('invalid --platform "linux/aarch64": unknown architecture "aarch64"');
    expect(run.stderr).not.toContain('platforms.0');
    expect(run.stderr).not.toContain('service (missing)');
    expect(run.stderr).toContain('run "mirrorfleet mirror --help" for usage');
    expect(connections - before, 'connections to Redis').toBe(0);
  });

  test('invalid source is named SOURCE', async () => {
    const run = await runCommand(['mirror', 'UPPER/case', '--registry', 'local', '--service', 'web'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('invalid SOURCE "UPPER/case": ');
  });

  test('unknown JSON field lists the accepted', async () => {
    const input = `${JSON.stringify({ source: 'nginx:1.27', servce: 'web' })}\n`;

    const run = await runCommand(['mirror', '--from-file', '-', '--registry', 'local', '--cluster', 'prod'], env, { input });

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('line 1: unknown field "servce"; accepted: v, source, registry, mode, cluster, service, platforms, referrers');
    expect(run.stderr).not.toContain('Unrecognized key');
    expect(run.stderr, 'the merged request is not repeated').not.toContain('"registry":"local"');
  });

  test('missing file is named', async () => {
    const path = join(folder, 'absent.txt');

    const mirror = await runCommand(['mirror', '--from-file', path, '--registry', 'local'], env);
    const reconcile = await runCommand(['reconcile', '--cluster', 'prod', '--from-file', path], env);

    expect(mirror.code).toBe(2);
    expect(mirror.stderr).toContain(`mirrorfleet: file not found: ${path}\n`);
    expect(mirror.stderr).not.toContain('ENOENT');
    expect(reconcile.code).toBe(2);
    expect(reconcile.stderr).toContain(`mirrorfleet: file not found: ${path}\n`);
  });

  test('directory as file is named', async () => {
    const run = await runCommand(['mirror', '--from-file', folder, '--registry', 'local'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`mirrorfleet: is a directory, not a file: ${folder}\n`);
  });
});

describe('unreachable Redis', () => {
  test('message shows the refused connection', async () => {
    const port = await freePort();
    const closed = { ...env, MIRRORFLEET_REDIS_URL: `redis://127.0.0.1:${port}` };

    const run = await runCommand(['job', '1'], closed);

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`mirrorfleet: cannot reach Redis at redis://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}; check MIRRORFLEET_REDIS_URL`);
    expect(run.stderr).not.toContain('Connection is closed');
    expect(run.stderr).not.toContain('.;');
  });

  test('server that never replies fails the check', async () => {
    // Accepts connections and reads what arrives, but never writes a byte back.
    const silent = createServer((socket) => socket.resume());
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const { port } = silent.address() as { port: number };
    try {
      const run = await runCommand(['job', '1'], { ...env, MIRRORFLEET_REDIS_URL: `redis://127.0.0.1:${port}` });

      expect(run.code).toBe(1);
      expect(run.stderr).toBe(`mirrorfleet: cannot reach Redis at redis://127.0.0.1:${port}: it accepted the connection but sent no reply within 5 s; check MIRRORFLEET_REDIS_URL\n`);
    } finally {
      silent.close();
    }
  });
});

describe('help', () => {
  test('help --help prints the general usage', async () => {
    const general = await runCommand(['help'], env);

    const run = await runCommand(['help', '--help'], env);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(general.stdout);
  });

  test('exit codes only where --wait is', async () => {
    for (const command of Object.keys(COMMAND_USAGE)) {
      const run = await runCommand([command, '--help'], env);
      const waits = run.stdout.includes('--wait');

      expect(run.code, command).toBe(0);
      expect(run.stdout.includes('Exit codes:'), `${command}: exit codes when --wait is ${waits}`).toBe(waits);
    }
  });

  test('worker help names the metrics address', async () => {
    const run = await runCommand(['worker', '--help'], env);

    expect(run.stdout).toContain('MIRRORFLEET_METRICS_HOST (default 0.0.0.0)');
  });
});

/** The system's Node.js (/usr/bin/node), and its version when it is older than 22.18; undefined otherwise. */
const OLD_NODE = '/usr/bin/node';
const oldNodeVersion = (() => {
  const run = spawnSync(OLD_NODE, ['--version'], { encoding: 'utf8' });
  if (run.status !== 0) return undefined;
  const version = run.stdout.trim().replace(/^v/, '');
  const [major, minor] = version.split('.').map(Number) as [number, number];
  return major < 22 || (major === 22 && minor < 18) ? version : undefined;
})();

describe('old Node.js', () => {
  test.skipIf(oldNodeVersion === undefined)('--version names the required version', () => {
    const run = spawnSync(OLD_NODE, [CLI, '--version'], { encoding: 'utf8', env });

    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`mirrorfleet: requires Node.js 22.18 or later, found ${oldNodeVersion} (${OLD_NODE})\n`);
  });
});
