import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort, spawn, stopProcess, waitFor } from './processes.ts';

export interface TestRegistry {
  /** `127.0.0.1:PORT`, the registry part of image references. */
  host: string;
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** Access log lines (method, path and status) recorded since start or the last `clearLog`. */
  requests(): Promise<AccessLogEntry[]>;
  clearLog(): Promise<void>;
  stop(): Promise<void>;
}

export interface AccessLogEntry {
  method: string;
  path: string;
  status: number;
}

export interface RegistryOptions {
  /** htpasswd file content; enables basic auth with realm "mirrorfleet-test". */
  htpasswd?: string;
  /** Token auth: the realm URL of a token server, the service name and the PEM of its signing certificate. */
  token?: { realm: string; service: string; issuer: string; rootCertBundle: string };
  /** Serve HTTPS with this PEM certificate and key; `url` then starts with `https://`. */
  tls?: { certificate: string; key: string };
}

/**
 * Starts a distribution registry (`docker-registry` 2.8) on a free loopback port with filesystem
 * storage in a temporary folder and deletion enabled. Its access log is parsed for request counts.
 */
export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'mirrorfleet-registry-'));
  const logPath = join(dir, 'registry.log');
  let auth = '';
  if (options.htpasswd !== undefined) {
    await writeFile(join(dir, 'htpasswd'), options.htpasswd);
    auth = `auth:\n  htpasswd:\n    realm: mirrorfleet-test\n    path: ${join(dir, 'htpasswd')}\n`;
  } else if (options.token) {
    await writeFile(join(dir, 'token-root.pem'), options.token.rootCertBundle);
    auth =
      `auth:\n  token:\n    realm: ${options.token.realm}\n    service: ${options.token.service}\n` +
      `    issuer: ${options.token.issuer}\n    rootcertbundle: ${join(dir, 'token-root.pem')}\n`;
  }
  let tls = '';
  if (options.tls) {
    await writeFile(join(dir, 'tls.crt'), options.tls.certificate);
    await writeFile(join(dir, 'tls.key'), options.tls.key);
    tls = `  tls:\n    certificate: ${join(dir, 'tls.crt')}\n    key: ${join(dir, 'tls.key')}\n`;
  }
  const config =
    `version: 0.1\n` +
    `log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: false\n` +
    `storage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n` +
    `http:\n  addr: 127.0.0.1:${port}\n  secret: ${randomBytes(16).toString('hex')}\n` +
    tls +
    auth;
  await writeFile(join(dir, 'config.yml'), config);

  const logFd = openSync(logPath, 'a');
  const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  await waitFor(`docker-registry on port ${port}`, async () => {
    // A TLS port responds to a plain-HTTP request with 400, which needs no trust in the test certificate.
    if (options.tls) return (await fetch(`http://127.0.0.1:${port}/v2/`)).status === 400;
    const response = await fetch(`${url}/v2/`);
    return response.status === 200 || response.status === 401;
  });

  let logOffset = 0;
  const readLog = async () => (await readFile(logPath)).subarray(logOffset).toString('utf8');
  return {
    host: `127.0.0.1:${port}`,
    url,
    requests: async () => parseAccessLog(await readLog()),
    clearLog: async () => {
      logOffset = (await readFile(logPath)).length;
    },
    stop: async () => {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// Lines look like: 127.0.0.1 - - [04/Dec/2026:20:00:00 +0000] "GET /v2/repo/blobs/sha256:ab HTTP/1.1" 200 1234 "" "agent"
const ACCESS_LINE = /"([A-Z]+) (\/v2\/[^ ]*) HTTP\/[0-9.]+" (\d{3}) /;

function parseAccessLog(text: string): AccessLogEntry[] {
  const entries: AccessLogEntry[] = [];
  for (const line of text.split('\n')) {
    const match = ACCESS_LINE.exec(line);
    if (match) entries.push({ method: match[1]!, path: match[2]!, status: Number(match[3]) });
  }
  return entries;
}
