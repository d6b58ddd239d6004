import { describe, expect, test } from 'vitest';
import { NetworkPolicy, parseNetwork } from '../../src/net/policy.ts';
import { ConfigError } from '../../src/errors.ts';

const DEFAULT = new NetworkPolicy([]);
const ALLOW_EVERYTHING = new NetworkPolicy(['0.0.0.0/0', '::/0']);

function reasonOf(policy: NetworkPolicy, address: string): string {
  const result = policy.check(address);
  if (result.allowed) throw new Error(`expected ${address} to be rejected`);
  return result.reason;
}

describe('parseNetwork', () => {
  test.each([
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['192.168.1.77/32', '192.168.1.77/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['fd00::/8', 'fd00::/8'],
    ['FD12:3456:789A::1/48', 'fd12:3456:789a::/48'],
    ['::/0', '::/0'],
    ['::1/128', '::1/128'],
    ['::ffff:10.0.0.0/104', '::ffff:a00:0/104'],
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128'],
  ])('parses %s as %s', (text, cidr) => {
    expect(parseNetwork(text)?.cidr).toBe(cidr);
  });

  test.each([
    '10.0.0.0',
    '10.0.0.0/',
    '10.0.0.0/33',
    '10.0.0.0/08',
    '10.0.0.0/-1',
    '10.0.0/8',
    '010.0.0.0/8',
    '256.0.0.0/8',
    'fd00::/129',
    'fe80::1%eth0/64',
    'fd00:::/8',
    'registry.example/8',
    ' 10.0.0.0/8',
    '',
  ])('rejects %j', (text) => {
    expect(parseNetwork(text)).toBeUndefined();
  });
});

describe('NetworkPolicy constructor', () => {
  test('throws ConfigError naming the invalid entry', () => {
    const create = () => new NetworkPolicy(['10.0.0.0/8', '10.0.0.0/33']);

    expect(create).toThrow(ConfigError);
    expect(create).toThrow(/"10\.0\.0\.0\/33"/);
    expect(create).toThrow(/MIRRORFLEET_ALLOW_NETWORKS/);
    expect(create).toThrow(/10\.0\.0\.0\/8 or fd00::\/8/);
  });

  test('stores canonical networks, IPv4-mapped blocks as IPv4', () => {
    const policy = new NetworkPolicy(['10.9.8.7/8', 'FD00::1/8', '::ffff:127.0.0.0/104']);

    expect(policy.allowNetworks).toEqual(['10.0.0.0/8', 'fd00::/8', '127.0.0.0/8']);
  });
});

describe('NetworkPolicy.check', () => {
  test.each([
    ['0.0.0.0', '0.0.0.0/8'],
    ['0.1.2.3', '0.0.0.0/8'],
    ['169.254.169.254', '169.254.169.254/32'],
    ['169.254.170.2', '169.254.0.0/16'],
    ['100.100.100.200', '100.100.100.200/32'],
    ['224.0.0.1', '224.0.0.0/4'],
    ['239.255.255.250', '224.0.0.0/4'],
    ['255.255.255.255', '255.255.255.255/32'],
    ['::', '::/128'],
    ['fd00:ec2::254', 'fd00:ec2::254/128'],
    ['fe80::1', 'fe80::/10'],
    ['fe80::1%eth0', 'fe80::/10'],
    ['febf:ffff::1', 'fe80::/10'],
    ['ff02::1', 'ff00::/8'],
    ['::ffff:169.254.169.254', '169.254.169.254/32'],
    ['::ffff:a9fe:a9fe', '169.254.169.254/32'],
    ['0:0:0:0:0:ffff:169.254.1.1', '169.254.0.0/16'],
    ['::ffff:0.0.0.0', '0.0.0.0/8'],
    ['64:ff9b::169.254.169.254', '169.254.169.254/32'],
  ])('always rejects %s (%s), even with everything allowed', (address, cidr) => {
    const reason = reasonOf(ALLOW_EVERYTHING, address);

    expect(reason).toContain(address);
    expect(reason).toContain(`(${cidr})`);
    expect(reason).toContain('always rejected');
    expect(DEFAULT.check(address).allowed).toBe(false);
  });

  test.each([
    ['127.0.0.1', '127.0.0.0/8'],
    ['127.255.255.254', '127.0.0.0/8'],
    ['10.0.0.1', '10.0.0.0/8'],
    ['172.16.0.1', '172.16.0.0/12'],
    ['172.31.255.255', '172.16.0.0/12'],
    ['192.168.1.1', '192.168.0.0/16'],
    ['100.64.0.1', '100.64.0.0/10'],
    ['100.127.255.255', '100.64.0.0/10'],
    ['::1', '::1/128'],
    ['0:0:0:0:0:0:0:1', '::1/128'],
    ['fc00::1', 'fc00::/7'],
    ['fd12:3456::1', 'fc00::/7'],
    ['::ffff:127.0.0.1', '127.0.0.0/8'],
    ['::ffff:7f00:1', '127.0.0.0/8'],
    ['::FFFF:10.1.2.3', '10.0.0.0/8'],
    ['::ffff:192.168.0.10', '192.168.0.0/16'],
    ['::ffff:100.64.1.1', '100.64.0.0/10'],
    ['64:ff9b::10.0.0.1', '10.0.0.0/8'],
  ])('rejects %s (%s) by default and allows it when allowed', (address, cidr) => {
    const reason = reasonOf(DEFAULT, address);

    expect(reason).toContain(address);
    expect(reason).toContain(`(${cidr})`);
    expect(reason).toContain('MIRRORFLEET_ALLOW_NETWORKS');
    expect(reason).toContain(`add ${cidr}`);
    expect(new NetworkPolicy([cidr]).check(address)).toEqual({ allowed: true });
    expect(ALLOW_EVERYTHING.check(address)).toEqual({ allowed: true });
  });

  test.each([
    '1.1.1.1',
    '8.8.8.8',
    '172.15.255.255',
    '172.32.0.1',
    '100.63.255.255',
    '100.128.0.1',
    '169.253.255.255',
    '223.255.255.255',
    '2001:4860:4860::8888',
    '2a00:1450::1',
    'fe00::1',
    '::ffff:8.8.8.8',
    '64:ff9b::8.8.8.8',
  ])('allows public address %s by default', (address) => {
    expect(DEFAULT.check(address)).toEqual({ allowed: true });
  });

  test('names the IPv4 address that a mapped address reaches', () => {
    expect(reasonOf(DEFAULT, '::ffff:7f00:1')).toContain('the IPv4-mapped form of 127.0.0.1');
    expect(reasonOf(DEFAULT, '64:ff9b::a00:1')).toContain('the NAT64 form of 10.0.0.1');
  });

  test('allows only what an allowed network contains', () => {
    const policy = new NetworkPolicy(['127.0.0.0/8', '10.1.0.0/16']);

    expect(policy.check('127.0.0.1')).toEqual({ allowed: true });
    expect(policy.check('::ffff:127.0.0.1')).toEqual({ allowed: true });
    expect(policy.check('10.1.2.3')).toEqual({ allowed: true });
    expect(policy.check('10.2.0.1').allowed).toBe(false);
    expect(policy.check('::1').allowed).toBe(false);
    expect(policy.check('192.168.0.1').allowed).toBe(false);
  });

  test('matches an IPv4-mapped allowed network against IPv4', () => {
    const policy = new NetworkPolicy(['::ffff:10.0.0.0/104']);

    expect(policy.check('10.1.2.3')).toEqual({ allowed: true });
    expect(policy.check('::ffff:10.1.2.3')).toEqual({ allowed: true });
    expect(policy.check('11.0.0.1')).toEqual({ allowed: true });
    expect(policy.check('192.168.0.1').allowed).toBe(false);
  });

  test.each(['registry.example', '', '127.0.0.1:80', '[::1]', '1.2.3'])('rejects non-address %j', (text) => {
    expect(reasonOf(ALLOW_EVERYTHING, text)).toContain('is not an IP address');
  });
});
