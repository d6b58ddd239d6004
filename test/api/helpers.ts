import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { z } from 'zod';
import { CLI } from '../harness/workers.ts';

export const ENQUEUE_TOKEN = 'enqueue-token-0123456789abcdef';
export const ADMIN_TOKEN = 'admin-token-0123456789abcdef';

/** `MIRRORFLEET_API_TOKENS` value with one enqueue token and one admin token. */
export const API_TOKENS = `${ENQUEUE_TOKEN}:enqueue,${ADMIN_TOKEN}:admin`;

export const asEnqueuer = { authorization: `Bearer ${ENQUEUE_TOKEN}` };
export const asAdmin = { authorization: `Bearer ${ADMIN_TOKEN}` };

export interface ApiProcess {
  url: string;
  child: ChildProcess;
  output(): string;
  /** SIGTERM and wait; returns the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `mirrorfleet api --port PORT --host 127.0.0.1` and waits until it logs that it started. */
export async function startApiProcess(env: NodeJS.ProcessEnv, port: number): Promise<ApiProcess> {
  const child = spawn(process.execPath, [CLI, 'api', '--port', String(port), '--host', '127.0.0.1'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const deadline = Date.now() + 30_000;
  while (!output.includes('"api started"')) {
    if (child.exitCode !== null) throw new Error(`api exited with ${child.exitCode} before starting:\n${output}`);
    if (Date.now() > deadline) throw new Error(`api did not start within 30 s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    child,
    output: () => output,
    stop: async () => {
      if (child.exitCode !== null) return child.exitCode;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}

/**
 * Returns a zod schema for a JSON Schema object of an OpenAPI document, with `#/components/schemas/...`
 * references resolved against the document's own components.
 */
export function schemaFromDocument(document: { components: { schemas: Record<string, unknown> } }, schema: unknown): z.ZodType {
  const rewrite = (value: unknown) => JSON.parse(JSON.stringify(value).replaceAll('"#/components/schemas/', '"#/$defs/')) as Record<string, unknown>;
  return z.fromJSONSchema({ ...rewrite(schema), $defs: rewrite(document.components.schemas) } as Parameters<typeof z.fromJSONSchema>[0]);
}
