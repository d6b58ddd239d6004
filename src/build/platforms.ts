import { InvalidInputError } from '../errors.ts';
import { formatPlatform, parsePlatform, type Platform } from '../registry/media-types.ts';

/**
 * Target platforms of a build in canonical form, so that `linux/arm64` and `linux/aarch64/v8` give the
 * same build tag. The aliases follow containerd's `platforms.Normalize`: `x86_64` is `amd64`, `aarch64`
 * is `arm64` and its default variant `v8` is dropped, `arm` without a variant is `arm/v7`.
 */

const ARCHITECTURE_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  i386: { architecture: '386' },
};

/** Returns `value` (`os/architecture[/variant]`) in canonical form. Throws InvalidInputError when it is not a platform. */
export function normalisePlatform(value: string): string {
  let platform: Platform;
  try {
    platform = parsePlatform(value.toLowerCase());
  } catch (error) {
    throw new InvalidInputError((error as Error).message);
  }

  const { os } = platform;
  let { architecture, variant } = platform;
  const alias = ARCHITECTURE_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    variant ??= alias.variant;
  }
  if (architecture === 'arm64' && variant === 'v8') variant = undefined;
  if (architecture === 'arm' && variant === undefined) variant = 'v7';
  return formatPlatform(variant === undefined ? { os, architecture } : { os, architecture, variant });
}

/** Returns the platform of the machine this process runs on, such as `linux/amd64`. */
export function nativePlatform(): string {
  const architectures: Partial<Record<NodeJS.Architecture, string>> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm/v7',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
  };
  const architecture = architectures[process.arch];
  if (architecture === undefined) {
    throw new InvalidInputError(`no default build platform for the CPU architecture "${process.arch}"; name the platforms in the request, such as linux/amd64`);
  }
  return `linux/${architecture}`;
}

/**
 * Returns the platforms in canonical form, without duplicates and sorted. An empty or absent list means
 * the platform of this machine, because builders build for it by default.
 */
export function targetPlatforms(values: readonly string[] | undefined): string[] {
  const platforms = values?.length ? values.map(normalisePlatform) : [nativePlatform()];
  return [...new Set(platforms)].sort();
}
