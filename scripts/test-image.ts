/**
 * `npm run test:image`: builds the Dockerfile with buildah and runs `mirrorfleet --help` inside the image.
 *
 * No Docker Hub here, so the script assembles its own Node 24 base image and passes it as the
 * Dockerfile's NODE_IMAGE argument, laid out as the official node:24-slim image is:
 *   1. a minimal Debian root filesystem from debootstrap (Debian's package mirror), cached in
 *      .tmp/image-base/ so that later runs skip it;
 *   2. Node 24: the binary in .tools/node when it is Node 24, or else `npm install node@24`, and npm from
 *      `npm pack npm@11`, both cached in .tmp/image-base/;
 *   3. pushed to a distribution registry that the script starts on loopback.
 * Then it builds the `runtime` and `build-worker` targets, checks each image's user, entry point and
 * contents with `buildah run`, and prints the output of `mirrorfleet --help` from inside the image.
 *
 * Needs root, for debootstrap and for buildah with chroot isolation and vfs storage in a temporary
 * folder. Needs the commands buildah, docker-registry and debootstrap (installed with apt-get when
 * missing). Needs network access to Debian's package mirror and the npm registry, because `npm ci` and
 * `apt-get` run inside the build. When the host trusts extra CA certificates for npm
 * (NODE_EXTRA_CA_CERTS, or else `npm config get cafile`), the build gets that file as the
 * `ca-certificates` build secret.
 *
 * Environment: MIRRORFLEET_DEBIAN_MIRROR (default http://deb.debian.org/debian).
 */

import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startRegistry, type TestRegistry } from '../test/harness/registry.ts';
import { PROJECT_ROOT } from '../test/harness/workers.ts';

// Debian 12. The Node binary copied into the image must run on its glibc, as the official builds do.
const DEBIAN_SUITE = 'bookworm';
const DEBIAN_MIRROR = process.env.MIRRORFLEET_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
const NODE_MAJOR = 24;
const NPM_SPEC = 'npm@11';
const APP_USER = '10001:10001';

const CACHE_DIR = join(PROJECT_ROOT, '.tmp', 'image-base');
const PROJECT_NODE = join(PROJECT_ROOT, '.tools', 'node', 'node_modules', 'node', 'bin', 'node');

const say = (text: string) => process.stderr.write(`[test:image] ${text}\n`);

/** Runs a command with its output passed through, and fails with the command line when it fails. */
async function run(command: string, args: string[]): Promise<void> {
  await execa(command, args, { stdio: 'inherit' });
}

/** Runs a command and returns its standard output, trimmed. */
async function capture(command: string, args: string[]): Promise<string> {
  const result = await execa(command, args, { stderr: 'inherit' });
  return result.stdout.trim();
}

async function commandExists(command: string): Promise<boolean> {
  const result = await execa('sh', ['-c', `command -v ${command}`], { reject: false });
  return result.exitCode === 0;
}

function debianArchitecture(): string {
  if (process.arch === 'x64') return 'amd64';
  if (process.arch === 'arm64') return 'arm64';
  throw new Error(`unsupported CPU architecture "${process.arch}": the base image is built for x64 (amd64) or arm64`);
}

// Phase 1: the Debian root filesystem, as a tar archive that buildah unpacks into an image layer.

async function debianRootfs(): Promise<string> {
  const architecture = debianArchitecture();
  const archive = join(CACHE_DIR, `debian-${DEBIAN_SUITE}-minbase-${architecture}.tar`);
  if (existsSync(archive)) {
    say(`Debian root filesystem: cached ${archive}`);
    return archive;
  }

  if (!(await commandExists('debootstrap'))) {
    say('installing debootstrap with apt-get');
    await run('apt-get', ['update', '-qq']);
    await execa('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'debootstrap'], {
      stdio: 'inherit',
      env: { DEBIAN_FRONTEND: 'noninteractive' },
    });
  }

  say(`Debian root filesystem: debootstrap ${DEBIAN_SUITE} (${architecture}) from ${DEBIAN_MIRROR}`);
  await mkdir(CACHE_DIR, { recursive: true });
  const work = await mkdtemp(join(CACHE_DIR, 'debootstrap-'));
  try {
    const rootfs = join(work, 'rootfs');
    await run('debootstrap', ['--variant=minbase', `--arch=${architecture}`, DEBIAN_SUITE, rootfs, DEBIAN_MIRROR]);

    // Host-specific files and the package caches do not belong in a base image. The container
    // runtime provides /dev, /etc/resolv.conf and /etc/hostname.
    for (const path of ['etc/resolv.conf', 'etc/hostname', 'var/log/bootstrap.log']) {
      await rm(join(rootfs, path), { force: true });
    }
    await run('find', [join(rootfs, 'var/cache/apt'), join(rootfs, 'var/lib/apt/lists'), '-type', 'f', '-delete']);

    const partial = `${archive}.partial`;
    await run('tar', ['--numeric-owner', '--exclude=./dev/*', '--exclude=./proc/*', '--exclude=./sys/*', '-C', rootfs, '-cf', partial, '.']);
    await rename(partial, archive);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return archive;
}

// Phase 2: Node 24 and npm.

async function nodeMajorVersion(binary: string): Promise<number | undefined> {
  const result = await execa(binary, ['-p', 'process.versions.node'], { reject: false });
  if (result.exitCode !== 0) return undefined;
  return Number(result.stdout.trim().split('.')[0]);
}

async function nodeBinary(): Promise<string> {
  if (existsSync(PROJECT_NODE) && (await nodeMajorVersion(PROJECT_NODE)) === NODE_MAJOR) {
    say(`Node ${NODE_MAJOR}: ${PROJECT_NODE}`);
    return PROJECT_NODE;
  }

  const prefix = join(CACHE_DIR, `node${NODE_MAJOR}`);
  const binary = join(prefix, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(binary)) {
    say(`Node ${NODE_MAJOR}: npm install node@${NODE_MAJOR}`);
    await run('npm', ['install', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', `node@${NODE_MAJOR}`]);
  }
  const major = await nodeMajorVersion(binary);
  if (major !== NODE_MAJOR) throw new Error(`${binary} is Node ${major ?? 'unknown'}, expected Node ${NODE_MAJOR}`);
  return binary;
}

/** Unpacks the npm package into the cache and returns its folder, which becomes /usr/local/lib/node_modules/npm. */
async function npmPackage(): Promise<string> {
  const folder = join(CACHE_DIR, 'npm');
  if (existsSync(join(folder, 'package', 'bin', 'npm-cli.js'))) return join(folder, 'package');

  say(`npm: npm pack ${NPM_SPEC}`);
  await rm(folder, { recursive: true, force: true });
  await mkdir(folder, { recursive: true });
  await run('npm', ['pack', NPM_SPEC, '--pack-destination', folder, '--loglevel=error']);
  const tarball = (await readdir(folder)).find((name) => name.endsWith('.tgz'));
  if (tarball === undefined) throw new Error(`npm pack ${NPM_SPEC} wrote no .tgz file into ${folder}`);
  await run('tar', ['-xzf', join(folder, tarball), '-C', folder]);
  return join(folder, 'package');
}

// Phase 3: buildah in a temporary store.

class Buildah {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  private global(args: string[]): string[] {
    return ['--root', join(this.root, 'storage'), '--runroot', join(this.root, 'run'), '--storage-driver', 'vfs', ...args];
  }

  run(args: string[]): Promise<void> {
    return run('buildah', this.global(args));
  }

  capture(args: string[]): Promise<string> {
    return capture('buildah', this.global(args));
  }

  /** Runs `command` in a new working container of `image` and returns its standard output. */
  async runIn(image: string, command: string[]): Promise<string> {
    const container = await this.capture(['from', '--quiet', '--pull=never', image]);
    try {
      return await this.capture(['run', '--isolation', 'chroot', container, '--', ...command]);
    } finally {
      await this.capture(['rm', container]);
    }
  }

  async imageConfig(image: string): Promise<{ User?: string; Entrypoint?: string[]; Cmd?: string[] }> {
    const inspected = JSON.parse(await this.capture(['inspect', '--type', 'image', image])) as {
      OCIv1: { config?: { User?: string; Entrypoint?: string[]; Cmd?: string[] } };
    };
    return inspected.OCIv1.config ?? {};
  }

  async remove(): Promise<void> {
    await execa('buildah', this.global(['rm', '--all']), { reject: false });
    await rm(this.root, { recursive: true, force: true });
  }
}

async function pushBaseImage(buildah: Buildah, registry: TestRegistry): Promise<string> {
  const rootfs = await debianRootfs();
  const node = await nodeBinary();
  const npm = await npmPackage();
  const reference = `${registry.host}/library/node:${NODE_MAJOR}-slim`;

  say(`assembling the base image ${reference}`);
  const container = await buildah.capture(['from', '--quiet', 'scratch']);
  await buildah.run(['add', container, rootfs, '/']);
  await buildah.run(['copy', '--chmod', '0755', container, node, '/usr/local/bin/node']);
  await buildah.run(['copy', container, npm, '/usr/local/lib/node_modules/npm']);
  await buildah.run([
    'run', '--isolation', 'chroot', container, '--', 'sh', '-c',
    'ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx',
  ]);
  await buildah.run([
    'config', '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--cmd', 'node', container,
  ]);
  await buildah.run(['commit', '--quiet', '--rm', container, 'localhost/mirrorfleet-test/node-base']);
  await buildah.run(['push', '--quiet', '--tls-verify=false', 'localhost/mirrorfleet-test/node-base', `docker://${reference}`]);
  // Removed locally, so that the build below has to pull it through the NODE_IMAGE argument.
  await buildah.run(['rmi', 'localhost/mirrorfleet-test/node-base']);
  return reference;
}

/** Build secrets that give `npm ci` inside the build the host's npm registry and extra CA certificates. */
async function npmBuildSecrets(folder: string): Promise<string[]> {
  const registry = await capture('npm', ['config', 'get', 'registry']);
  const npmrc = join(folder, 'npmrc');
  await writeFile(npmrc, `registry=${registry}\n`, { mode: 0o600 });
  const secrets = ['--secret', `id=npmrc,src=${npmrc}`];

  const cafile = process.env.NODE_EXTRA_CA_CERTS ?? (await capture('npm', ['config', 'get', 'cafile']));
  if (cafile !== '' && cafile !== 'null' && cafile !== 'undefined' && existsSync(cafile)) {
    secrets.push('--secret', `id=ca-certificates,src=${resolve(cafile)}`);
  }
  return secrets;
}

async function buildTarget(buildah: Buildah, target: string, tag: string, baseImage: string, secrets: string[]): Promise<void> {
  say(`building target ${target} as ${tag}`);
  await buildah.run([
    'build', '--isolation', 'chroot', '--tls-verify=false',
    '--build-arg', `NODE_IMAGE=${baseImage}`, ...secrets,
    '--target', target, '--tag', tag, '--file', join(PROJECT_ROOT, 'Dockerfile'), PROJECT_ROOT,
  ]);
}

// Phase 4: checks.

/**
 * Returns the direct production dependencies, and the development dependencies that no production
 * dependency needs (a development dependency can also sit in the production tree, such as typescript
 * as a peer of valibot).
 */
async function dependencyNames(): Promise<{ production: string[]; developmentOnly: string[] }> {
  const manifest = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
  // npm ls exits with 1 on extraneous packages, which still leaves a complete tree on stdout.
  const listing = await execa('npm', ['ls', '--omit=dev', '--all', '--json'], { cwd: PROJECT_ROOT, reject: false });
  const inProductionTree = new Set<string>();
  const walk = (dependencies: Record<string, { dependencies?: Record<string, unknown> }> | undefined) => {
    for (const [name, node] of Object.entries(dependencies ?? {})) {
      inProductionTree.add(name);
      walk(node.dependencies as Record<string, { dependencies?: Record<string, unknown> }> | undefined);
    }
  };
  walk((JSON.parse(listing.stdout) as { dependencies?: Record<string, { dependencies?: Record<string, unknown> }> }).dependencies);

  return {
    production: Object.keys(manifest.dependencies ?? {}),
    developmentOnly: Object.keys(manifest.devDependencies ?? {}).filter((name) => !inProductionTree.has(name)),
  };
}

function expectEqual(description: string, actual: unknown, expected: unknown): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${description}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
  say(`ok: ${description} is ${JSON.stringify(actual)}`);
}

async function checkRuntimeImage(buildah: Buildah, image: string): Promise<string> {
  const config = await buildah.imageConfig(image);
  expectEqual(`${image} user`, config.User, APP_USER);
  expectEqual(`${image} entry point`, config.Entrypoint, ['mirrorfleet']);
  expectEqual(`${image} command`, config.Cmd, ['worker']);
  expectEqual(`${image} process user id`, await buildah.runIn(image, ['id', '-u']), '10001');

  // Every production dependency is installed, and no development dependency that only the tests use.
  const { production, developmentOnly } = await dependencyNames();
  // The image ships the compiled JavaScript only: bin/mirrorfleet.js runs dist/ when there is no src/.
  const expected = [...production.map((name) => `${name} present`), ...developmentOnly.map((name) => `${name} absent`), 'code read-only', 'no sources', 'compiled code present'];
  const probe =
    `for module in ${[...production, ...developmentOnly].join(' ')}; do ` +
    'if [ -d "/app/node_modules/$module" ]; then echo "$module present"; else echo "$module absent"; fi; done; ' +
    'if touch /app/dist/probe 2>/dev/null; then echo "code writable"; else echo "code read-only"; fi; ' +
    'if [ -e /app/src ]; then echo "sources present"; else echo "no sources"; fi; ' +
    'if [ -f /app/dist/src/cli/main.js ]; then echo "compiled code present"; else echo "compiled code missing"; fi';
  const contents = await buildah.runIn(image, ['sh', '-c', probe]);
  expectEqual(`${image} contents`, contents.split('\n'), expected);

  const help = await buildah.runIn(image, ['mirrorfleet', '--help']);
  if (!help.includes('Usage:') || !help.includes('mirrorfleet worker')) throw new Error(`mirrorfleet --help printed no usage:\n${help}`);
  return help;
}

async function checkBuildWorkerImage(buildah: Buildah, image: string): Promise<void> {
  const config = await buildah.imageConfig(image);
  expectEqual(`${image} user`, config.User, APP_USER);
  expectEqual(`${image} entry point`, config.Entrypoint, ['tini', '--', 'mirrorfleet']);
  // NOTE: running a build inside this image is not checked: buildah's chroot isolation forbids the
  // nested user namespace that rootless buildah creates (unshare(CLONE_NEWUSER) fails with EPERM in a chroot).
  const versions = (await buildah.runIn(image, ['sh', '-c', 'buildah --version && git --version && tini --version'])).split('\n');
  const expectedPrefixes = ['buildah version ', 'git version ', 'tini version '];
  expectedPrefixes.forEach((prefix, index) => {
    if (!versions[index]?.startsWith(prefix)) throw new Error(`${image}: expected a line starting with "${prefix}", got ${JSON.stringify(versions[index])}`);
  });
  say(`ok: ${image} carries ${versions.join(', ')}`);
  const help = await buildah.runIn(image, ['mirrorfleet', '--help']);
  if (!help.includes('Usage:')) throw new Error(`mirrorfleet --help in ${image} printed no usage:\n${help}`);
  say(`ok: ${image} runs mirrorfleet --help`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('run as root: debootstrap and buildah with chroot isolation need root (sudo npm run test:image)');
  }
  for (const command of ['buildah', 'docker-registry']) {
    if (!(await commandExists(command))) {
      throw new Error(`${command} not found; run MIRRORFLEET_NEED_BUILDAH=1 bash scripts/bootstrap.sh true to install it`);
    }
  }

  const buildah = new Buildah(await mkdtemp(join(tmpdir(), 'mirrorfleet-image-')));
  let registry: TestRegistry | undefined;
  try {
    registry = await startRegistry();
    say(`registry for the base image: ${registry.url}`);
    const baseImage = await pushBaseImage(buildah, registry);
    const secrets = await npmBuildSecrets(buildah.root);

    await buildTarget(buildah, 'runtime', 'localhost/mirrorfleet:test', baseImage, secrets);
    const help = await checkRuntimeImage(buildah, 'localhost/mirrorfleet:test');
    await buildTarget(buildah, 'build-worker', 'localhost/mirrorfleet-build:test', baseImage, secrets);
    await checkBuildWorkerImage(buildah, 'localhost/mirrorfleet-build:test');

    process.stdout.write(`\n$ buildah run <localhost/mirrorfleet:test> -- mirrorfleet --help\n${help}\n`);
    say('passed');
  } finally {
    await registry?.stop();
    await buildah.remove();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`[test:image] failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
