/**
 * Readers for the packaging files (Dockerfile, docker-compose.yml, Kubernetes manifests) and for what
 * they refer to in the project: CLI commands and options, environment variables, queues.
 */

import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { CLI, PROJECT_ROOT } from '../harness/workers.ts';

export { PROJECT_ROOT };

/** Parses one YAML document. Merge keys (`<<: *anchor`) are resolved, as Docker Compose does. */
export function readYaml(path: string): unknown {
  return parse(readFileSync(path, 'utf8'), { merge: true, prettyErrors: true });
}

/** Parses every document of a YAML stream, skipping empty ones. Throws on the first syntax error. */
export function readYamlDocuments(path: string): unknown[] {
  const documents = parseAllDocuments(readFileSync(path, 'utf8'), { merge: true, prettyErrors: true });
  const list = Array.isArray(documents) ? documents : [];
  for (const document of list) {
    if (document.errors.length > 0) throw new Error(`${path}: ${document.errors[0]!.message}`);
  }
  return list.map((document) => document.toJS() as unknown).filter((value) => value !== null && value !== undefined);
}

// Docker Compose interpolation: $$ is a literal $, ${NAME}, ${NAME:-default}, ${NAME-default},
// ${NAME:?message}, ${NAME?message}, and $NAME.
const INTERPOLATION = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;

/**
 * Replaces variables in every string of `value` the way Docker Compose does, with values from `env`.
 * Throws, as Compose does, when a `${NAME:?message}` variable is missing.
 */
export function interpolate<T>(value: T, env: Record<string, string>): T {
  if (typeof value === 'string') {
    return value.replace(INTERPOLATION, (match, braced: string | undefined, operator: string | undefined, argument: string | undefined, bare: string | undefined) => {
      if (match === '$$') return '$';
      const name = braced ?? bare!;
      const current = env[name];
      const missing = operator?.startsWith(':') ? current === undefined || current === '' : current === undefined;
      if (!missing || operator === undefined) return current ?? '';
      if (operator.endsWith('-')) return argument ?? '';
      throw new Error(`required variable ${name} is missing: ${argument}`);
    }) as T;
  }
  if (Array.isArray(value)) return value.map((item: unknown) => interpolate(item, env)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, interpolate(item, env)])) as T;
  }
  return value;
}

/** Usage text of each `mirrorfleet` command, from `mirrorfleet help`, keyed by command name. */
export function cliUsage(): Map<string, string> {
  const result = spawnSync(process.execPath, [CLI, 'help'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`mirrorfleet help exited with ${result.status}: ${result.stderr}`);

  const usage = new Map<string, string>();
  let current: string | undefined;
  for (const line of result.stdout.split('\n')) {
    const start = /^ {2}mirrorfleet ([a-z][a-z-]*)/.exec(line);
    if (start) current = start[1];
    else if (!line.startsWith('    ')) current = undefined;
    if (current !== undefined) usage.set(current, `${usage.get(current) ?? ''}${line}\n`);
  }
  return usage;
}

/** Collects the `--options` that the usage text of a command names. */
export function usageOptions(usage: string): Set<string> {
  return new Set(usage.match(/--[a-z][a-z-]*/g) ?? []);
}

/** Checks a command line against the CLI usage: a known command, and only options its usage names. */
export function unknownCliParts(args: readonly string[], usage: Map<string, string>): string[] {
  const [command, ...rest] = args;
  const text = command === undefined ? undefined : usage.get(command);
  if (text === undefined) return [`command ${JSON.stringify(command)}`];
  const known = usageOptions(text);
  return rest.filter((arg) => arg.startsWith('--') && !known.has(arg.split('=')[0]!)).map((arg) => `option ${arg} of ${command}`);
}

/** Returns the value that follows `--name` in a command line, or undefined. */
export function optionValue(args: readonly string[], name: string): string | undefined {
  const index = args.indexOf(`--${name}`);
  return index < 0 ? undefined : args[index + 1];
}

/**
 * Names of the MIRRORFLEET_* environment variables that the code reads: every name written as a string
 * literal or a property (`process.env.NAME`) in src/, workers/, queues/ and bin/.
 */
export function environmentVariablesInSource(): Set<string> {
  const names = new Set<string>();
  for (const folder of ['src', 'workers', 'queues', 'bin']) {
    for (const file of listFiles(join(PROJECT_ROOT, folder))) {
      if (!/\.(ts|js)$/.test(file)) continue;
      for (const match of readFileSync(file, 'utf8').matchAll(/['"`.](MIRRORFLEET_[A-Z0-9_]+)\b/g)) names.add(match[1]!);
    }
  }
  return names;
}

/** Lists every file under `folder`, recursively, as absolute paths. */
export function listFiles(folder: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) files.push(...listFiles(path));
    else files.push(path);
  }
  return files;
}

export interface DockerfileStage {
  name: string | undefined;
  base: string;
  /** Instructions after FROM, keyword in upper case, continuation lines joined. */
  instructions: { keyword: string; arguments: string }[];
}

export interface Dockerfile {
  /** `ARG` instructions before the first FROM, with their default values. */
  globalArgs: Map<string, string | undefined>;
  stages: DockerfileStage[];
}

/** Reads a Dockerfile into its stages. Comments and blank lines are dropped; `\` continues a line. */
export function readDockerfile(path: string): Dockerfile {
  const lines: string[] = [];
  let pending = '';
  for (const raw of readFileSync(path, 'utf8').split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    if (raw.endsWith('\\')) {
      pending += `${raw.slice(0, -1)} `;
      continue;
    }
    const line = `${pending}${raw}`.trim();
    pending = '';
    if (line !== '') lines.push(line);
  }

  const dockerfile: Dockerfile = { globalArgs: new Map(), stages: [] };
  for (const line of lines) {
    const [, keyword = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const upper = keyword.toUpperCase();
    if (upper === 'FROM') {
      const from = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      if (!from) throw new Error(`${path}: cannot read FROM ${rest}`);
      dockerfile.stages.push({ base: from[1]!, name: from[2], instructions: [] });
      continue;
    }
    const stage = dockerfile.stages.at(-1);
    if (stage === undefined) {
      if (upper !== 'ARG') throw new Error(`${path}: ${upper} before the first FROM`);
      const [name, value] = rest.split('=', 2) as [string, string | undefined];
      dockerfile.globalArgs.set(name, value);
      continue;
    }
    stage.instructions.push({ keyword: upper, arguments: rest });
  }
  return dockerfile;
}

/** Returns a stage and the stages it is built FROM, base first. */
export function stageChain(dockerfile: Dockerfile, name: string): DockerfileStage[] {
  const stage = dockerfile.stages.find((candidate) => candidate.name === name);
  if (stage === undefined) return [];
  const parent = dockerfile.stages.find((candidate) => candidate.name !== undefined && candidate.name === stage.base);
  return parent === undefined ? [stage] : [...stageChain(dockerfile, parent.name!), stage];
}

/** Returns the arguments of the last `keyword` instruction in a stage chain, the one that applies to the final stage. */
export function lastInstruction(chain: DockerfileStage[], keyword: string): string | undefined {
  return chain.flatMap((stage) => stage.instructions).filter((instruction) => instruction.keyword === keyword).at(-1)?.arguments;
}

/** A parsed kustomization: the manifests it renders, each with the file it came from. */
export interface RenderedManifest {
  file: string;
  manifest: Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } };
}

/**
 * Renders a kustomization folder the way `kubectl apply -k` does for the features these manifests use:
 * `resources` (files, and folders with a kustomization.yaml of their own) and `namespace`. Throws on any
 * other key, so that a new kustomize feature here is noticed instead of ignored.
 */
export function renderKustomization(folder: string): RenderedManifest[] {
  const kustomization = readYaml(join(folder, 'kustomization.yaml')) as Record<string, unknown>;
  const supported = new Set(['apiVersion', 'kind', 'namespace', 'resources']);
  for (const key of Object.keys(kustomization)) {
    if (!supported.has(key)) throw new Error(`${join(folder, 'kustomization.yaml')}: key ${key} is not rendered by this test`);
  }

  const rendered: RenderedManifest[] = [];
  for (const resource of (kustomization.resources as string[] | undefined) ?? []) {
    const path = join(folder, resource);
    if (statSync(path).isDirectory()) rendered.push(...renderKustomization(path));
    else {
      for (const manifest of readYamlDocuments(path)) rendered.push({ file: relative(PROJECT_ROOT, path), manifest: manifest as RenderedManifest['manifest'] });
    }
  }

  const namespace = kustomization.namespace as string | undefined;
  if (namespace !== undefined) {
    for (const { manifest } of rendered) {
      if (manifest.kind !== 'Namespace') manifest.metadata.namespace = namespace;
    }
  }
  return rendered;
}

/** Folders under `root` that hold a kustomization.yaml. */
export function kustomizationFolders(root: string): string[] {
  return listFiles(root)
    .filter((file) => file.endsWith('/kustomization.yaml'))
    .map((file) => dirname(file));
}
