import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';

/** Temporary directory that `setUpConfigDirectory` creates anew for each test. */
export interface ConfigDirectory {
  /** Path of the running test's directory. Read it inside a test or hook, because it changes for every test. */
  readonly path: string;
  /** Writes `content` (JSON-encoded unless it is a string) to `fileName` in the directory and returns the file's path. */
  writeConfigFile(content: unknown, fileName?: string): string;
}

/**
 * Registers beforeEach and afterEach hooks in the calling test file that create a directory named
 * `mirrorfleet-config-NAME-XXXXXX` under `os.tmpdir()` before each test and remove it after.
 * Call it at the top level of the file. `writeConfigFile` does not use `this`, so it can be destructured.
 */
export function setUpConfigDirectory(name: string): ConfigDirectory {
  let directory: string | undefined;

  beforeEach(() => {
    directory = mkdtempSync(join(tmpdir(), `mirrorfleet-config-${name}-`));
  });

  afterEach(() => {
    if (directory !== undefined) rmSync(directory, { recursive: true, force: true });
    directory = undefined;
  });

  const currentDirectory = (): string => {
    if (directory === undefined) throw new Error('the temporary config directory exists only while a test runs, so use it inside a test or hook');
    return directory;
  };

  return {
    get path() {
      return currentDirectory();
    },
    writeConfigFile(content: unknown, fileName = 'config.json'): string {
      const path = join(currentDirectory(), fileName);
      writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
      return path;
    },
  };
}

/** Runs loadConfig, expects it to throw a ConfigError and returns that error. */
export function loadConfigError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('loadConfig returned instead of throwing ConfigError');
}

/** Runs loadConfig, expects it to throw a ConfigError and returns the error's message. */
export function configErrorMessage(env: NodeJS.ProcessEnv): string {
  return loadConfigError(env).message;
}
