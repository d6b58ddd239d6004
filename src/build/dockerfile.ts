/**
 * Finds the build argument names a Dockerfile declares with `ARG`, in every stage. Only these names
 * enter the build tag and reach the builder as build arguments.
 *
 * The scan follows the Dockerfile reference (docs.docker.com/reference/dockerfile): instruction keywords
 * are case-insensitive; a line ending in the escape character continues on the next line; comment lines
 * and empty lines inside a continued instruction are dropped; the `# escape=` parser directive, allowed
 * only before the first instruction, comment or empty line, changes the escape character to a backtick.
 * `ARG` takes one or more `NAME` or `NAME=default` words.
 *
 * NOTE: heredoc bodies (`RUN <<EOF`) are scanned like instructions, so a heredoc line that starts with
 * `ARG` counts as a declaration. That can only add names, which costs at most an unneeded rebuild.
 */

const DIRECTIVE = /^#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$/;

/** Returns the names declared by `ARG` instructions in `content`, as written (names are case-sensitive). */
export function declaredArgNames(content: string): Set<string> {
  const lines = content.replace(/^\uFEFF/, '').split(/\r?\n/);
  const escape = escapeCharacter(lines);
  const names = new Set<string>();

  for (const instruction of logicalLines(lines, escape)) {
    const match = /^\s*(\S+)(?:\s+([\s\S]*))?$/.exec(instruction);
    if (!match || match[1]!.toUpperCase() !== 'ARG') continue;
    for (const word of splitWords(match[2] ?? '')) {
      const name = word.split('=', 1)[0]!;
      if (name !== '') names.add(name);
    }
  }
  return names;
}

// An unknown directive counts as a comment, which ends the directives.
const KNOWN_DIRECTIVES = new Set(['syntax', 'escape', 'check']);

/** Reads the parser directives at the top of the file and returns the escape character. */
function escapeCharacter(lines: string[]): string {
  let escape = '\\';
  for (const line of lines) {
    const directive = DIRECTIVE.exec(line.trim());
    const name = directive?.[1]!.toLowerCase();
    if (!directive || name === undefined || !KNOWN_DIRECTIVES.has(name)) break;
    if (name === 'escape' && (directive[2] === '`' || directive[2] === '\\')) escape = directive[2];
  }
  return escape;
}

/** Joins continued lines into one instruction each, without comments and empty lines. */
function logicalLines(lines: string[], escape: string): string[] {
  const instructions: string[] = [];
  let current: string | undefined;
  for (const raw of lines) {
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;

    const line = raw.trimEnd();
    if (line.endsWith(escape)) {
      current = (current ?? '') + line.slice(0, -1);
      continue;
    }
    instructions.push((current ?? '') + line);
    current = undefined;
  }
  if (current !== undefined) instructions.push(current);
  return instructions;
}

/** Splits the arguments of `ARG` into words, keeping quoted whitespace inside its word. */
function splitWords(text: string): string[] {
  const words: string[] = [];
  let word = '';
  let quote: string | undefined;
  for (const character of text) {
    if (quote !== undefined) {
      if (character === quote) quote = undefined;
      word += character;
    } else if (character === '"' || character === "'") {
      quote = character;
      word += character;
    } else if (/\s/.test(character)) {
      if (word !== '') words.push(word);
      word = '';
    } else {
      word += character;
    }
  }
  if (word !== '') words.push(word);
  return words;
}
