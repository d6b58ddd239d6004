#!/usr/bin/env node
// Entry point of the `mirrorfleet` command. In a checkout, Node.js 22.18 and later run the TypeScript
// sources directly. The container image and the npm package hold no sources, only the JavaScript that
// `npm run build` compiles into dist/, which the process loads without stripping types: a worker then
// starts with about 30 MB less memory. Node does not strip types under node_modules either.
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
const sources = new URL('../src/cli/main.ts', import.meta.url);
const compiled = installed || !existsSync(sources);
const entry = compiled ? new URL('../dist/src/cli/main.js', import.meta.url) : sources;
if (compiled && !existsSync(entry)) {
  // Node does not strip types under node_modules, so an installed copy needs dist/ even when it has src/.
  const reason = existsSync(sources)
    ? 'Node.js does not run TypeScript sources under node_modules, and this installed copy was not compiled'
    : 'this copy holds neither the TypeScript sources nor the compiled JavaScript';
  process.stderr.write(
    `mirrorfleet: ${fileURLToPath(entry)} is missing: ${reason}. Install the tarball that \`npm pack\` writes in a ` +
      'mirrorfleet checkout (a git dependency is not compiled), or run `npm run build` in the copy\n',
  );
  process.exit(1);
}
const { main } = await import(entry.href);

const code = await main(process.argv.slice(2));
// Writes to a pipe can still be queued here; exiting before they drain would cut JSON output short.
const drained = (stream) => new Promise((resolve) => stream.write('', resolve));
await Promise.all([drained(process.stdout), drained(process.stderr)]);
process.exit(code);
