import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { fleetEnv, PROJECT_ROOT } from '../harness/workers.ts';
import { COMMAND_USAGE } from '../../src/cli/usage.ts';
import { runCommand } from './run.ts';

/**
 * Help and version output. MIRRORFLEET_REDIS_URL points at a loopback socket that only counts the
 * connections it accepts, so a test can check that the command never connected to Redis.
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
  env = fleetEnv({ redisUrl: `redis://127.0.0.1:${port}`, keyPrefix: 'help-test', mirrorRegistries: ['local=registry.test:5000'], insecureRegistries: [] });
});

afterAll(async () => {
  listener?.close();
});

describe('mirrorfleet help', () => {
  test.each(Object.keys(COMMAND_USAGE))('%s --help prints its usage only', async (command) => {
    const before = connections;

    const long = await runCommand([command, '--help'], env, { killAfterMs: 30_000 });
    const short = await runCommand([command, '-h'], env, { killAfterMs: 30_000 });

    expect(long.code, long.stderr).toBe(0);
    expect(long.stdout).toContain(`mirrorfleet ${command} `);
    expect(long.stdout.includes('Exit codes:'), 'exit codes with --wait only').toBe(COMMAND_USAGE[command as keyof typeof COMMAND_USAGE].includes('--wait'));
    for (const other of Object.keys(COMMAND_USAGE).filter((name) => name !== command)) {
      expect(long.stdout, `usage of ${other}`).not.toContain(`  mirrorfleet ${other} `);
    }
    expect(short.code, short.stderr).toBe(0);
    expect(short.stdout).toBe(long.stdout);
    expect(connections - before, 'connections to Redis').toBe(0);
  });

  test('--help wins over other options', async () => {
    const run = await runCommand(['mirror', 'nginx:1.27', '--registry', 'nowhere', '--wait', '--help'], env, { killAfterMs: 30_000 });

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('mirrorfleet mirror --from-file FILE|-');
    expect(run.stderr).toBe('');
  });

  test('help COMMAND equals COMMAND --help', async () => {
    const topic = await runCommand(['help', 'release'], env);
    const flag = await runCommand(['release', '--help'], env);

    expect(topic.code).toBe(0);
    expect(topic.stdout).toBe(flag.stdout);
  });

  test('help lists every command usage', async () => {
    const run = await runCommand(['help'], env);

    expect(run.code).toBe(0);
    for (const usage of Object.values(COMMAND_USAGE)) expect(run.stdout).toContain(usage);
    expect(run.stdout).toContain('3 --wait ended at --timeout');
  });

  test('help of unknown command exits 2', async () => {
    const run = await runCommand(['help', 'mirorr'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('no help for unknown command "mirorr"');
  });

  test('usage error points to command help', async () => {
    const run = await runCommand(['mirror', '--no-such-option'], env);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('run "mirrorfleet mirror --help" for usage');
  });
});

describe('mirrorfleet version', () => {
  test('prints the package version', async () => {
    const { version } = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
    const before = connections;

    const flag = await runCommand(['--version'], env);
    const word = await runCommand(['version'], env);

    expect(flag.code, flag.stderr).toBe(0);
    expect(flag.stdout).toBe(`mirrorfleet ${version}\n`);
    expect(word.code, word.stderr).toBe(0);
    expect(word.stdout).toBe(flag.stdout);
    expect(connections - before, 'connections to Redis').toBe(0);
  });
});
