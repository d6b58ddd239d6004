import type { Platform } from '../src/registry/media-types.ts';

/**
 * Platform names a request may ask for. The OCI image index specification (v1.1, image-index.md,
 * `platform`) states that indexes should use Go's GOOS and GOARCH values for `os` and `architecture`; the
 * lists below are Go's known values (src/internal/syslist/syslist.go). A name outside them matches no
 * image, so a request with one is rejected before it is enqueued.
 */

export const OPERATING_SYSTEMS: readonly string[] = [
  'aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js', 'linux', 'nacl', 'netbsd', 'openbsd', 'plan9', 'solaris', 'wasip1', 'windows', 'zos',
];

export const ARCHITECTURES: readonly string[] = [
  '386', 'amd64', 'amd64p32', 'arm', 'armbe', 'arm64', 'arm64be', 'loong64', 'mips', 'mipsle', 'mips64', 'mips64le', 'mips64p32', 'mips64p32le',
  'ppc', 'ppc64', 'ppc64le', 'riscv', 'riscv64', 's390', 's390x', 'sparc', 'sparc64', 'wasm',
];

/**
 * Variants per architecture. `arm` v6 to v8 and `arm64` v8 are the specification's table. `arm` v5 is
 * what Docker's official images use for ARMv5, and `amd64` v1 to v4 are Go's GOAMD64 levels, which
 * containerd's platforms package (database.go) keeps as variants. Other architectures take no variant.
 */
export const VARIANTS: Readonly<Record<string, readonly string[]>> = {
  arm: ['v5', 'v6', 'v7', 'v8'],
  arm64: ['v8'],
  amd64: ['v1', 'v2', 'v3', 'v4'],
};

/**
 * Names other tools use for an architecture (uname -m, Debian, containerd's platforms package), with the
 * name to write instead. Debian's armel is ARMv5, but containerd reads it as v6, so it gets no hint.
 */
const ARCHITECTURE_ALIASES: Readonly<Record<string, string>> = {
  aarch64: 'arm64',
  arm64v8: 'arm64',
  x86_64: 'amd64',
  'x86-64': 'amd64',
  x64: 'amd64',
  i386: '386',
  i686: '386',
  x86: '386',
  armhf: 'arm/v7',
  armv7: 'arm/v7',
  armv7l: 'arm/v7',
  armv6: 'arm/v6',
  armv6l: 'arm/v6',
  ppc64el: 'ppc64le',
};

const OS_ALIASES: Readonly<Record<string, string>> = {
  macos: 'darwin',
  osx: 'darwin',
  win: 'windows',
  win32: 'windows',
};

/**
 * Returns what is wrong with the names of a parsed platform, such as `linux/aarch64`, or `undefined` when
 * it uses known names. The message names the part, its value, a likely intended name, and the accepted ones.
 */
export function platformNameProblem(platform: Platform): string | undefined {
  const { os, architecture, variant } = platform;
  if (!OPERATING_SYSTEMS.includes(os)) {
    const alias = OS_ALIASES[os];
    const hint = alias === undefined ? '' : ` (did you mean ${[alias, architecture, variant].filter(Boolean).join('/')}?)`;
    return `unknown os "${os}"${hint}; accepted: ${OPERATING_SYSTEMS.join(', ')}`;
  }
  if (!ARCHITECTURES.includes(architecture)) {
    const alias = ARCHITECTURE_ALIASES[architecture];
    const hint = alias === undefined ? '' : ` (did you mean ${os}/${alias}?)`;
    return `unknown architecture "${architecture}"${hint}; accepted: ${ARCHITECTURES.join(', ')}`;
  }
  if (variant === undefined) return undefined;
  const variants = VARIANTS[architecture] ?? [];
  if (variants.includes(variant)) return undefined;
  if (variants.length === 0) return `architecture ${architecture} takes no variant, found "${variant}"; write ${os}/${architecture}`;
  return `unknown variant "${variant}" of ${architecture}; accepted: ${variants.join(', ')}`;
}
