import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { CLI, type CliResult } from '../harness/workers.ts';

export interface RunOptions {
  /** Text written to the command's standard input, which is then closed. */
  input?: string;
  /**
   * The command is killed after this long and the result has `code: null`, so a command that should
   * have exited at once (and, before a fix, starts a long-running worker instead) fails its test.
   */
  killAfterMs?: number;
}

/** Runs the `mirrorfleet` command to completion, with standard input when given. */
export async function runCommand(args: string[], env: NodeJS.ProcessEnv, options: RunOptions = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdin.end(options.input ?? '');
  const killer = options.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.killAfterMs);
  try {
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, stdout, stderr };
  } finally {
    clearTimeout(killer);
  }
}
