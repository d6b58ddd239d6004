import { isIP } from 'node:net';
import type { ExecaError } from 'execa';
import { AddressRejectedError, InvalidInputError, MirrorfleetError } from '../errors.ts';
import type { NetworkPolicy } from '../net/policy.ts';
import type { Resolver } from '../net/connector.ts';

/**
 * The git side of a build: where the source lives, and fetching, reading and checking out one commit
 * with the `git` command (through execa, arguments never pass through a shell).
 *
 * Every command runs in a repository of our own in a temporary folder, never in the requester's
 * repository, because git runs commands named in a repository's configuration (`core.fsmonitor`,
 * hooks). GIT_ALLOW_PROTOCOL allows only the file, git, http, https and ssh transports, which shuts out
 * remote helpers such as `ext::` that run commands.
 */

export type GitLocation = { kind: 'local'; path: string } | { kind: 'remote'; url: string; host: string };

const ALLOWED_SCHEMES = new Set(['https:', 'http:', 'ssh:', 'git:', 'git+ssh:', 'ssh+git:', 'file:']);
const SCP_LIKE = /^(?:[^@/:\s]+@)?(\[[0-9a-fA-F:.]+\]|[^:/\s]+):(.+)$/;
const COMMIT = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const URL_EXPECTED =
  'an absolute local path, an https://, http://, ssh:// or git:// URL, or user@host:path, such as https://git.example/org/app.git';

/**
 * Parses the git source of a build request. Throws InvalidInputError for anything else, for an option
 * in disguise (a leading `-`), for remote helper syntax (`transport::address`), and for credentials in an
 * http(s) URL, which would otherwise be stored in Redis with the job.
 */
export function parseGitUrl(url: string): GitLocation {
  if (url === '' || /[\u0000-\u001f\u007f]/.test(url)) throw new InvalidInputError(`invalid git.url ${JSON.stringify(url)}: expected ${URL_EXPECTED}, without control characters`);
  if (url.startsWith('-')) throw new InvalidInputError(`invalid git.url "${url}": it must not start with "-"; expected ${URL_EXPECTED}`);
  // A local path may contain spaces; a URL writes them as %20.
  if (url.startsWith('/')) return { kind: 'local', path: url };
  if (/\s/.test(url)) throw new InvalidInputError(`invalid git.url "${url}": a URL has no whitespace (write a space as %20); expected ${URL_EXPECTED}`);

  const schemeMatch = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url);
  if (schemeMatch) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new InvalidInputError(`invalid git.url "${url}": not a URL; expected ${URL_EXPECTED}`);
    }
    if (!ALLOWED_SCHEMES.has(parsed.protocol)) {
      throw new InvalidInputError(`invalid git.url "${redactUserinfo(url)}": scheme ${parsed.protocol.slice(0, -1)} is not accepted; expected ${URL_EXPECTED}`);
    }
    if (parsed.protocol === 'file:') {
      if (parsed.host !== '') throw new InvalidInputError(`invalid git.url "${url}": a file URL must not name a host, such as file:///srv/git/app`);
      return { kind: 'local', path: decodeURIComponent(parsed.pathname) };
    }
    if (parsed.password !== '' || ((parsed.protocol === 'https:' || parsed.protocol === 'http:') && parsed.username !== '')) {
      throw new InvalidInputError(
        `invalid git.url "${redactUserinfo(url)}": credentials in the URL would be stored with the job; configure a git credential helper on the workers instead`,
      );
    }
    return { kind: 'remote', url, host: parsed.hostname.replace(/^\[|\]$/g, '') };
  }

  if (url.includes('::')) throw new InvalidInputError(`invalid git.url "${url}": git remote helper syntax (transport::address) is not accepted; expected ${URL_EXPECTED}`);
  const scp = SCP_LIKE.exec(url);
  if (scp) return { kind: 'remote', url, host: scp[1]!.replace(/^\[|\]$/g, '') };
  throw new InvalidInputError(`invalid git.url "${url}": expected ${URL_EXPECTED}`);
}

/** Returns the commit id in lowercase. Throws InvalidInputError unless it is a full SHA-1 or SHA-256 commit id. */
export function normaliseCommit(commit: string): string {
  const lower = commit.toLowerCase();
  if (!COMMIT.test(lower)) {
    throw new InvalidInputError(`invalid git.commit "${commit}": expected a full commit id of 40 (SHA-1) or 64 (SHA-256) hex characters, not a branch, tag or short id`);
  }
  return lower;
}

/**
 * Checks that every address the host of a remote git source resolves to is allowed by the network
 * policy. Throws AddressRejectedError naming the address and the reason.
 * NOTE: git resolves the name again when it connects, so a name whose answer changes between the two
 * lookups (DNS rebinding) can still reach a rejected address; only an egress firewall closes that.
 */
export async function checkGitHost(location: GitLocation, policy: NetworkPolicy, resolve: Resolver): Promise<void> {
  if (location.kind === 'local') return;
  const addresses = isIP(location.host) ? [location.host] : (await resolve(location.host)).map((entry) => entry.address);
  for (const address of addresses) {
    const check = policy.check(address);
    if (!check.allowed) throw new AddressRejectedError(`git source host ${location.host} is not allowed: ${check.reason}`);
  }
}

/** The git commands a build needs; an interface so that tests can count calls. */
export interface GitOperations {
  /** Creates a bare repository at `gitDir` and fetches `commit` from `url` into it, shallow where the remote allows. */
  fetch(url: string, commit: string, gitDir: string): Promise<void>;
  /** Returns the bytes of `path` in `commit`, following symbolic links inside the tree; undefined when there is no such file. */
  readFile(gitDir: string, commit: string, path: string): Promise<Buffer | undefined>;
  /** Writes the files of `commit` into `workTree`. */
  checkout(gitDir: string, commit: string, workTree: string): Promise<void>;
}

export interface GitOptions {
  /** Time limit of each git command. */
  timeoutMs: number;
}

/** Creates the git operations that run the `git` command. */
export function createGit(options: GitOptions): GitOperations {
  const env = {
    GIT_TERMINAL_PROMPT: '0',
    GIT_ALLOW_PROTOCOL: 'file:git:http:https:ssh',
    // A prompt for an ssh host key or passphrase would block the job until its timeout.
    GIT_SSH_COMMAND: process.env.GIT_SSH_COMMAND ?? 'ssh -o BatchMode=yes',
  };
  // execa loads about a hundred modules, so a worker loads it only when it runs git.
  const git = async (args: string[], extra: { input?: string; encoding?: 'buffer' } = {}) =>
    (await import('execa')).execa('git', args, { env, timeout: options.timeoutMs, forceKillAfterDelay: 5_000, stdin: extra.input === undefined ? 'ignore' : 'pipe', ...extra });

  return {
    async fetch(url, commit, gitDir) {
      await run(() => git(['init', '--quiet', '--bare', gitDir]), 'creating the git repository');
      await run(() => git(['-C', gitDir, 'remote', 'add', 'origin', '--', url]), `adding the git remote ${url}`);

      // A shallow fetch of one commit needs a server that accepts a commit id as the wanted object
      // (protocol v2 servers do); otherwise fall back to fetching every branch in full.
      const shallow = await git(['-C', gitDir, 'fetch', '--quiet', '--no-tags', '--depth', '1', '--filter=blob:none', 'origin', commit]).then(
        () => undefined,
        (error: ExecaError) => error,
      );
      if (shallow !== undefined) {
        if (isUnreachable(shallow)) throw fetchFailure(url, commit, shallow);
        await run(() => git(['-C', gitDir, 'fetch', '--quiet', '--no-tags', '--filter=blob:none', 'origin']), `fetching ${url}`, (error) => fetchFailure(url, commit, error));
        const present = await git(['-C', gitDir, 'cat-file', '-e', `${commit}^{commit}`]).then(() => true, () => false);
        if (!present) throw new InvalidInputError(`git.commit ${commit} does not exist in ${url}: neither a shallow fetch of it nor a fetch of every branch found it`);
      }
    },

    async readFile(gitDir, commit, path) {
      const result = await run(
        () => git(['-C', gitDir, 'cat-file', '--batch', '--follow-symlinks'], { input: `${commit}:${path}\n`, encoding: 'buffer' }),
        `reading ${path} in ${commit}`,
      );
      const output = Buffer.from(result.stdout as unknown as Uint8Array);
      const headerEnd = output.indexOf(0x0a);
      const header = output.subarray(0, headerEnd < 0 ? output.length : headerEnd).toString('utf8');
      const blob = /^[0-9a-f]+ blob (\d+)$/.exec(header);
      if (blob) return output.subarray(headerEnd + 1, headerEnd + 1 + Number(blob[1]));
      if (header.startsWith('symlink ')) throw new InvalidInputError(`${path} in commit ${commit} is a symbolic link that points outside the git repository`);
      return undefined;
    },

    async checkout(gitDir, commit, workTree) {
      await run(() => git([`--git-dir=${gitDir}`, `--work-tree=${workTree}`, 'checkout', '--quiet', '--force', '--detach', commit]), `checking out ${commit}`);
    },
  };
}

/** Runs a git command and turns its failure into a retryable error with git's last lines, or into `convert`'s error. */
async function run<T>(command: () => Promise<T>, doing: string, convert?: (error: ExecaError) => MirrorfleetError): Promise<T> {
  try {
    return await command();
  } catch (error) {
    const failure = error as ExecaError;
    if (convert) throw convert(failure);
    throw new MirrorfleetError('GIT_FAILED', `git failed while ${doing}: ${describeGitError(failure)}`, { retryable: true, cause: error });
  }
}

/** True when git says the repository itself cannot be read, as opposed to the commit not being offered. */
function isUnreachable(error: ExecaError): boolean {
  const text = String(error.stderr ?? '');
  return /does not appear to be a git repository|Repository not found|Could not read from remote repository|Authentication failed|could not resolve host|Connection refused|timed out/i.test(text) || Boolean(error.timedOut);
}

function fetchFailure(url: string, commit: string, error: ExecaError): MirrorfleetError {
  const detail = describeGitError(error);
  if (/does not appear to be a git repository|Repository not found|Authentication failed|not our ref|couldn't find remote ref/i.test(String(error.stderr ?? ''))) {
    return new InvalidInputError(`cannot fetch git.commit ${commit} from ${url}: ${detail}`);
  }
  // Network trouble and timeouts may pass, so the job is retried.
  return new MirrorfleetError('GIT_FAILED', `cannot fetch git.commit ${commit} from ${url}: ${detail}`, { retryable: true, cause: error });
}

function describeGitError(error: ExecaError): string {
  if (error.timedOut) return 'git did not finish in time';
  const lines = String(error.stderr ?? error.message).split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('warning: filtering not recognized'));
  // git's own diagnosis is on its fatal: and error: lines; advice such as "Please make sure ..." follows them.
  const diagnosis = lines.filter((line) => /^(?:fatal|error):/.test(line));
  return (diagnosis.length > 0 ? diagnosis : lines).slice(-3).join(' / ') || `git exited with code ${error.exitCode}`;
}

function redactUserinfo(url: string): string {
  return url.replace(/\/\/[^/@]*@/, '//<redacted>@');
}
