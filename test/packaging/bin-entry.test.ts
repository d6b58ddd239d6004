import { afterAll, beforeAll, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../harness/workers.ts';

/**
 * bin/mirrorfleet.js picks the TypeScript sources in a checkout and the compiled dist/ elsewhere, and
 * names the reason when the code it picked is missing. Copies of bin/ are made in a temporary folder.
 */

let folder: string;

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), 'mirrorfleet-bin-'));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

async function copyOf(path: string, parts: string[]): Promise<string> {
  const root = join(folder, path);
  await mkdir(root, { recursive: true });
  for (const part of parts) await cp(join(PROJECT_ROOT, part), join(root, part), { recursive: true });
  return join(root, 'bin', 'mirrorfleet.js');
}

function run(bin: string): { status: number | null; stderr: string } {
  const result = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
  return { status: result.status, stderr: result.stderr };
}

test('copy without code names both', async () => {
  const bin = await copyOf('plain', ['bin', 'package.json']);

  const result = run(bin);

  expect(result.status).toBe(1);
  expect(result.stderr).toBe(
    `mirrorfleet: ${join(folder, 'plain', 'dist', 'src', 'cli', 'main.js')} is missing: this copy holds neither the TypeScript sources nor the compiled JavaScript. ` +
      'Install the tarball that `npm pack` writes in a mirrorfleet checkout (a git dependency is not compiled), or run `npm run build` in the copy\n',
  );
});

test('installed sources without dist explained', async () => {
  const bin = await copyOf(join('node_modules', 'mirrorfleet'), ['bin', 'src', 'package.json']);

  const result = run(bin);

  expect(result.status).toBe(1);
  expect(result.stderr).toContain('is missing: Node.js does not run TypeScript sources under node_modules, and this installed copy was not compiled.');
});

test('checkout runs its sources', () => {
  const result = spawnSync(process.execPath, [join(PROJECT_ROOT, 'bin', 'mirrorfleet.js'), '--version'], { encoding: 'utf8' });

  expect(result.status).toBe(0);
  expect(result.stdout.trim()).toMatch(/^mirrorfleet \d+\.\d+\.\d+/);
});
