import { describe, expect, test } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { PROJECT_ROOT } from '../harness/workers.ts';

/**
 * A static check over the sources: image names, tags and build variables reach external programs only
 * as execa arguments, never through a shell. No module imports child_process. No execa call sets
 * `shell` or uses a form that parses a command string, and every call passes its arguments as an array.
 * The copy path runs no program, except the credential helpers that the docker config.json names.
 */

/** Folders whose modules run in workers, the API and the CLI. */
const SOURCE_FOLDERS = ['src', 'queues', 'workers', 'bin'];

/** Modules a mirror job runs: they may not start a program at all. */
const COPY_PATH = ['src/registry', 'src/mirror', 'src/dedupe', 'src/image-ref', 'src/net', 'queues', 'workers/mirror.ts'];

/** `docker-credential-<helper> get` is run for a helper that the docker config.json names, with a fixed argument. */
const COPY_PATH_PROGRAMS = new Set(['src/registry/credentials.ts']);

interface SourceFile {
  path: string;
  /** The text with comments blanked out, so that prose about shells does not count. */
  code: string;
}

async function sourceFiles(): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  const visit = async (folder: string): Promise<void> => {
    for (const entry of await readdir(folder, { withFileTypes: true })) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) await visit(path);
      else if (/\.(?:[cm]?[jt]s)$/.test(entry.name)) {
        files.push({ path: relative(PROJECT_ROOT, path), code: withoutComments(await readFile(path, 'utf8')) });
      }
    }
  };
  for (const folder of SOURCE_FOLDERS) await visit(join(PROJECT_ROOT, folder));
  return files;
}

/**
 * Replaces comments with spaces and keeps everything else. Strings, template literals and regular
 * expression literals are skipped so that `//` inside them is not read as a comment.
 */
export function withoutComments(text: string): string {
  let output = '';
  let i = 0;
  let previousSignificant = '';
  while (i < text.length) {
    const character = text[i]!;
    const next = text[i + 1];
    if (character === '/' && next === '/') {
      const end = text.indexOf('\n', i);
      const stop = end === -1 ? text.length : end;
      output += ' '.repeat(stop - i);
      i = stop;
      continue;
    }
    if (character === '/' && next === '*') {
      const end = text.indexOf('*/', i + 2);
      const stop = end === -1 ? text.length : end + 2;
      output += text.slice(i, stop).replace(/[^\n]/g, ' ');
      i = stop;
      continue;
    }
    if (character === '"' || character === "'" || character === '`' || (character === '/' && startsRegex(previousSignificant))) {
      const stop = endOfLiteral(text, i);
      output += text.slice(i, stop);
      i = stop;
      previousSignificant = 'literal';
      continue;
    }
    output += character;
    if (!/\s/.test(character)) previousSignificant = character;
    i += 1;
  }
  return output;
}

/** Returns true when a "/" after `previous` starts a regular expression: after an operator or an opening bracket, not after a value. */
function startsRegex(previous: string): boolean {
  return previous === '' || '(,=:[!&|?{};+-*%<>~^'.includes(previous);
}

/** Returns the index after the string, template or regular expression literal that starts at `start`. */
function endOfLiteral(text: string, start: number): number {
  const quote = text[start]!;
  let inClass = false;
  for (let i = start + 1; i < text.length; i += 1) {
    const character = text[i]!;
    if (character === '\\') {
      i += 1;
      continue;
    }
    if (quote === '/' && character === '[') inClass = true;
    else if (quote === '/' && character === ']') inClass = false;
    else if (quote === '`' && character === '$' && text[i + 1] === '{') {
      i = endOfBraces(text, i + 1);
      continue;
    } else if (character === quote && !inClass) {
      if (quote === '/') {
        while (/[a-z]/i.test(text[i + 1] ?? '')) i += 1;
      }
      return i + 1;
    } else if (character === '\n' && quote !== '`') return i;
  }
  return text.length;
}

/** Returns the index of the "}" that closes the "{" at `open`, skipping nested literals. */
function endOfBraces(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i += 1) {
    const character = text[i]!;
    if (character === '"' || character === "'" || character === '`') {
      i = endOfLiteral(text, i) - 1;
      continue;
    }
    if (character === '{') depth += 1;
    if (character === '}') {
      depth -= 1;
      if (depth === 0) return i;
    }
  }
  return text.length;
}

/** Module specifiers of every static import, dynamic import and require in `code`. */
function importedModules(code: string): string[] {
  const specifiers: string[] = [];
  for (const match of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)(['"`])([^'"`]+)\1/g)) specifiers.push(match[2]!);
  return specifiers;
}

export interface ExecaCall {
  /** Text from the callee to the end of the call, for messages. */
  text: string;
  /** Argument texts, split at top-level commas. */
  args: string[];
  /** The call is a tagged template or builds one: execa`...` or execa(options)`...`. */
  template: boolean;
}

/** Finds every call of execa, execaSync and execaNode in `code`. */
export function execaCalls(code: string): ExecaCall[] {
  const calls: ExecaCall[] = [];
  for (const match of code.matchAll(/\bexeca(?:Sync|Node)?\b(?!\s*[,}'"]|\s+from|\s+as)/g)) {
    let i = match.index + match[0].length;
    while (/\s/.test(code[i] ?? '')) i += 1;
    if (code[i] === '`') {
      calls.push({ text: code.slice(match.index, i + 40), args: [], template: true });
      continue;
    }
    if (code[i] !== '(') continue;
    const close = closingParenthesis(code, i);
    const args = splitArguments(code.slice(i + 1, close));
    let after = close + 1;
    while (/\s/.test(code[after] ?? '')) after += 1;
    calls.push({ text: code.slice(match.index, close + 1), args, template: code[after] === '`' });
  }
  return calls;
}

function closingParenthesis(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i += 1) {
    const character = code[i]!;
    if (character === '"' || character === "'" || character === '`') {
      i = endOfLiteral(code, i) - 1;
      continue;
    }
    if ('([{'.includes(character)) depth += 1;
    if (')]}'.includes(character)) {
      depth -= 1;
      if (depth === 0) return i;
    }
  }
  return code.length;
}

function splitArguments(text: string): string[] {
  const args: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i += 1) {
    const character = text[i]!;
    if (character === '"' || character === "'" || character === '`') {
      i = endOfLiteral(text, i) - 1;
      continue;
    }
    if ('([{'.includes(character)) depth += 1;
    if (')]}'.includes(character)) depth -= 1;
    if (character === ',' && depth === 0) {
      args.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  if (text.slice(start).trim() !== '') args.push(text.slice(start).trim());
  return args;
}

/** True when `argument` is an array literal, or a name that `code` declares as a string array. */
export function isArgumentArray(argument: string, code: string): boolean {
  if (argument.startsWith('[')) return true;
  if (!/^[A-Za-z_$][\w$]*$/.test(argument)) return false;
  const name = argument.replace(/\$/g, '\\$');
  const declaration = new RegExp(`\\b${name}\\s*(?:\\?\\s*)?:\\s*(?:readonly\\s+)?(?:string\\[\\]|Array<string>|ReadonlyArray<string>)|\\b(?:const|let)\\s+${name}\\s*=\\s*\\[`);
  return declaration.test(code);
}

function inCopyPath(path: string): boolean {
  return COPY_PATH.some((prefix) => path === prefix || path.startsWith(`${prefix}/`));
}

describe('no shell', () => {
  test('no module imports child_process', async () => {
    const importers = (await sourceFiles()).filter((file) => importedModules(file.code).some((specifier) => /^(?:node:)?child_process$/.test(specifier)));

    expect(importers.map((file) => file.path)).toEqual([]);
  });

  test('no module imports a command-string form of execa', async () => {
    const offenders: string[] = [];
    for (const file of await sourceFiles()) {
      for (const match of file.code.matchAll(/import\s*(?:type\s+)?\{([^}]*)\}\s*from\s*['"]execa['"]/g)) {
        for (const name of match[1]!.split(',').map((part) => part.trim().split(/\s+as\s+/)[0]!.replace(/^type\s+/, ''))) {
          if (['$', 'execaCommand', 'execaCommandSync', 'parseCommandString'].includes(name)) offenders.push(`${file.path}: ${name}`);
        }
      }
      if (/import\s+\*\s+as\s+\w+\s+from\s*['"]execa['"]/.test(file.code) || /import\s+\w+\s+from\s*['"]execa['"]/.test(file.code)) offenders.push(`${file.path}: whole-module import`);
    }

    expect(offenders).toEqual([]);
  });

  test('execa calls pass an argument array and never a shell', async () => {
    const offenders: string[] = [];
    let calls = 0;
    for (const file of await sourceFiles()) {
      for (const call of execaCalls(file.code)) {
        calls += 1;
        const where = `${file.path}: ${call.text.replace(/\s+/g, ' ').slice(0, 120)}`;
        if (call.template) offenders.push(`${where} (template form)`);
        else if (call.args.length < 2 || call.args[0]!.startsWith('{')) offenders.push(`${where} (no argument array)`);
        else if (!isArgumentArray(call.args[1]!, file.code)) offenders.push(`${where} (arguments ${call.args[1]} are not a string array)`);
        if (call.args.slice(2).some((options) => /\bshell\b/.test(options))) offenders.push(`${where} (sets shell)`);
      }
      if (/\bshell\s*:/.test(file.code)) offenders.push(`${file.path}: a "shell:" option`);
    }

    expect(offenders).toEqual([]);
    expect(calls, 'the check found the execa calls it checks').toBeGreaterThan(0);
  });

  test('copy path starts no program', async () => {
    const starters = (await sourceFiles())
      .filter((file) => inCopyPath(file.path) && !COPY_PATH_PROGRAMS.has(file.path))
      .filter((file) => importedModules(file.code).some((specifier) => specifier === 'execa' || /child_process$/.test(specifier)));

    expect(starters.map((file) => file.path)).toEqual([]);
  });

  test('credential helper runs with a fixed argument', async () => {
    const [helper] = (await sourceFiles()).filter((file) => COPY_PATH_PROGRAMS.has(file.path));
    const calls = helper ? execaCalls(helper.code) : [];

    for (const call of calls) expect(call.args[1], call.text).toBe("['get']");
  });
});

describe('source scanner', () => {
  test('finds calls and their arguments', () => {
    const code = withoutComments("// execa('sh', ['-c', x], { shell: true })\nconst a = execa(file, args, { env });\nexeca`echo ${tag}`;\nexeca({ shell: true })`x`;\n");

    const calls = execaCalls(code);

    expect(calls).toHaveLength(3);
    expect(calls[0]!.args).toEqual(['file', 'args', '{ env }']);
    expect(calls[1]!.template).toBe(true);
    expect(calls[2]!.template).toBe(true);
  });

  test('keeps strings and regular expressions that contain comment markers', () => {
    const code = "const url = 'http://example/'; const pattern = /\\/\\//; execa('git', ['a']); /* execa('sh') */";

    expect(execaCalls(withoutComments(code)).map((call) => call.args)).toEqual([["'git'", "['a']"]]);
  });

  test('recognises declared string arrays', () => {
    expect(isArgumentArray('args', 'function f(args: string[]) {}')).toBe(true);
    expect(isArgumentArray('args', 'const args = [a, b];')).toBe(true);
    expect(isArgumentArray('args', 'function f(args: string) {}')).toBe(false);
    expect(isArgumentArray('`--tag ${tag}`', '')).toBe(false);
  });
});
