#!/usr/bin/env node
// Entry point of the `mirrorfleet` command. In a checkout and in the container image, Node.js 22.18 and
// later run the TypeScript sources directly. Node does not strip types from files under node_modules,
// so an installed package runs the JavaScript that `npm pack` compiles into dist/ instead.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The same minimum as `engines` in package.json. Older versions fail later with messages that do not say
// why: Node 20 cannot load undici 8 (TypeError "reading 'bind'") nor strip TypeScript types
// (ERR_UNKNOWN_FILE_EXTENSION), so the version is checked before anything else is imported.
const REQUIRED = [22, 18];
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < REQUIRED[0] || (major === REQUIRED[0] && minor < REQUIRED[1])) {
  process.stderr.write(`mirrorfleet: requires Node.js ${REQUIRED.join('.')} or later, found ${process.versions.node} (${process.execPath})\n`);
  process.exit(1);
}

const installed = import.meta.url.includes('/node_modules/');
const entry = new URL(installed ? '../dist/src/cli/main.js' : '../src/cli/main.ts', import.meta.url);
if (installed && !existsSync(entry)) {
  process.stderr.write(
    `mirrorfleet: ${fileURLToPath(entry)} is missing because this installed copy was not compiled ` +
      '(a git dependency is not); install the tarball that `npm pack` writes in a mirrorfleet checkout instead\n',
  );
  process.exit(1);
}
const { main } = await import(entry.href);

const code = await main(process.argv.slice(2));
// Writes to a pipe can still be queued here; exiting before they drain would cut JSON output short.
const drained = (stream) => new Promise((resolve) => stream.write('', resolve));
await Promise.all([drained(process.stdout), drained(process.stderr)]);
process.exit(code);
