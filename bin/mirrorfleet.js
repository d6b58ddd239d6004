#!/usr/bin/env node
// Entry point of the `mirrorfleet` command. Node.js 22.18 and later run the TypeScript sources directly.
import { main } from '../src/cli/main.ts';

const code = await main(process.argv.slice(2));
// Writes to a pipe can still be queued here; exiting before they drain would cut JSON output short.
const drained = (stream) => new Promise((resolve) => stream.write('', resolve));
await Promise.all([drained(process.stdout), drained(process.stderr)]);
process.exit(code);
