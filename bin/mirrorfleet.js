#!/usr/bin/env node
// Entry point of the `mirrorfleet` command. Node.js 22.18 and later run the TypeScript sources directly.
import { main } from '../src/cli/main.ts';

process.exit(await main(process.argv.slice(2)));
