import { execa } from 'execa';
import { cp, mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../test/harness/workers.ts';

/**
 * The worker as the container image ships it, for the memory scenario: the JavaScript that
 * `npm run build` compiles, next to bin/ and package.json and without the TypeScript sources, so that
 * bin/mirrorfleet.js loads dist/ as it does in the image. It runs with the image's NODE_OPTIONS.
 */

export interface ShippedWorker {
  /** Path of bin/mirrorfleet.js in the compiled copy. */
  cli: string;
  /** The NODE_OPTIONS value that the Dockerfile sets for every process of the image. */
  nodeOptions: string;
}

const SHIPPED_DIR = join(PROJECT_ROOT, '.tmp', 'bench-shipped');

/** Compiles the project into .tmp/bench-shipped/ and returns how to run its worker. */
export async function prepareShippedWorker(): Promise<ShippedWorker> {
  await rm(SHIPPED_DIR, { recursive: true, force: true });
  await mkdir(SHIPPED_DIR, { recursive: true });
  const tsc = join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await execa(process.execPath, [tsc, '-p', join(PROJECT_ROOT, 'tsconfig.build.json'), '--outDir', join(SHIPPED_DIR, 'dist')], { cwd: PROJECT_ROOT });
  await cp(join(PROJECT_ROOT, 'bin'), join(SHIPPED_DIR, 'bin'), { recursive: true });
  await cp(join(PROJECT_ROOT, 'package.json'), join(SHIPPED_DIR, 'package.json'));
  await symlink(join(PROJECT_ROOT, 'node_modules'), join(SHIPPED_DIR, 'node_modules'), 'dir');
  return { cli: join(SHIPPED_DIR, 'bin', 'mirrorfleet.js'), nodeOptions: await imageNodeOptions() };
}

/** Reads the NODE_OPTIONS value of the `ENV` instruction in the Dockerfile. */
async function imageNodeOptions(): Promise<string> {
  const dockerfile = await readFile(join(PROJECT_ROOT, 'Dockerfile'), 'utf8');
  const match = /^ENV\b.*\bNODE_OPTIONS=(\S+)/m.exec(dockerfile);
  if (!match) throw new Error('the Dockerfile sets no NODE_OPTIONS in an ENV instruction; the benchmark expected one');
  return match[1]!;
}
