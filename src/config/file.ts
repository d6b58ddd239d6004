/**
 * Reading and validating the configuration file named by `MIRRORFLEET_CONFIG`.
 * The file is JSON. YAML is not supported yet because no YAML parser is a dependency of the project.
 */

import { readFileSync } from 'node:fs';
import type { Config } from './config.ts';
import { ENV } from './env.ts';
import { dottedPath, problemsFromIssues, type ConfigProblem } from './problems.ts';
import { configFileSchema } from './schema.ts';

export interface FileResult {
  /** The validated file with defaults filled in, or `undefined` when there is any problem. */
  config: Config | undefined;
  /** Problems with reading or parsing the file, keyed by `MIRRORFLEET_CONFIG`. */
  readProblems: ConfigProblem[];
  /** Problems with the file's content, keyed by dotted path. */
  contentProblems: ConfigProblem[];
}

const FILE_EXPECTED = 'a path to a readable JSON configuration file';
const CONTENT_EXPECTED = 'a JSON object (YAML is not supported yet)';

/** Reads, parses and validates the configuration file at `path`, and returns every failure as a problem. */
export function readConfigFile(path: string): FileResult {
  const failed = (detail: string, expected: string): FileResult => ({
    config: undefined,
    readProblems: [{ key: ENV.configFile, detail, expected }],
    contentProblems: [],
  });
  if (path === '') return failed('invalid value ""', FILE_EXPECTED);

  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return failed(`file ${JSON.stringify(path)} not found`, FILE_EXPECTED);
    return failed(`cannot read file ${JSON.stringify(path)} (${code ?? String(error)})`, FILE_EXPECTED);
  }

  let json: unknown;
  try {
    // Editors on Windows may save a byte order mark, which JSON.parse rejects.
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    return failed(`file ${JSON.stringify(path)} is not valid JSON${describeSyntaxErrorPosition(error)}`, CONTENT_EXPECTED);
  }

  const result = configFileSchema.safeParse(json, { reportInput: true });
  if (result.success) return { config: result.data, readProblems: [], contentProblems: [] };
  const contentProblems = problemsFromIssues(result.error.issues, (issuePath) =>
    issuePath.length === 0 ? ENV.configFile : dottedPath(issuePath),
  );
  return { config: undefined, readProblems: [], contentProblems };
}

/**
 * Returns ` at line L, column C` when the syntax error states a position, or ''. The V8 message itself
 * is not used, because some forms of it quote the text around the error, which may be a password.
 */
function describeSyntaxErrorPosition(error: unknown): string {
  if (!(error instanceof SyntaxError)) return '';
  const match = /\(line (\d+) column (\d+)\)/.exec(error.message);
  if (match === null) return '';
  return ` at line ${match[1]}, column ${match[2]}`;
}
