import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopProcess } from './processes.ts';

export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(PROJECT_ROOT, 'bin', 'mirrorfleet.js');

export interface FleetEnvironment {
  redisUrl: string;
  keyPrefix: string;
  /** `NAME=HOST[:PORT][/PREFIX]` entries. */
  mirrorRegistries: string[];
  /** Hosts contacted over plain HTTP (the test registries). */
  insecureRegistries: string[];
  extra?: Record<string, string>;
}

/** Environment of a mirrorfleet process talking to the test's own Redis and registries on loopback. */
export function fleetEnv(environment: FleetEnvironment): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('MIRRORFLEET_')) delete env[key];
  return {
    ...env,
    MIRRORFLEET_REDIS_URL: environment.redisUrl,
    MIRRORFLEET_KEY_PREFIX: environment.keyPrefix,
    MIRRORFLEET_MIRROR_REGISTRIES: environment.mirrorRegistries.join(','),
    MIRRORFLEET_INSECURE_REGISTRIES: environment.insecureRegistries.join(','),
    MIRRORFLEET_ALLOW_NETWORKS: '127.0.0.0/8',
    MIRRORFLEET_METRICS_PORT: '0',
    MIRRORFLEET_LOG_LEVEL: 'info',
    ...environment.extra,
  };
}

export interface WorkerProcess {
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** SIGTERM and wait; returns the exit code. */
  stop(): Promise<number | null>;
  kill(): Promise<void>;
}

/**
 * Starts `mirrorfleet worker` as its own process and waits until it logs that the workers started.
 * `cli` is the path of the command, the checkout's bin/mirrorfleet.js by default.
 */
export async function startWorker(env: NodeJS.ProcessEnv, args: string[] = [], cli = CLI): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [cli, 'worker', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const deadline = Date.now() + 30_000;
  while (!output.includes('workers started')) {
    if (child.exitCode !== null) throw new Error(`worker exited with ${child.exitCode} before starting:\n${output}`);
    if (Date.now() > deadline) throw new Error(`worker did not start within 30 s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child,
    output: () => output,
    stop: async () => {
      if (child.exitCode !== null) return child.exitCode;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      return code;
    },
    kill: async () => {
      child.kill('SIGKILL');
      await stopProcess(child);
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the `mirrorfleet` command to completion. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}
