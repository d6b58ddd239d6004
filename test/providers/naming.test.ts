import { describe, expect, test } from 'vitest';
import { InvalidInputError } from '../../src/errors.ts';
import { fitName, HASH_LENGTH, namespaceComponents, shortHash, type NameRules } from '../../src/providers/naming.ts';

const SLASHED: NameRules = { maxLength: 40, slashes: true, separators: 'single' };
const FLAT: NameRules = { maxLength: 20, minLength: 4, slashes: false, separators: 'hyphen' };

describe('fitName', () => {
  test('keeps a name that fits', () => {
    expect(fitName('team/app.v2', SLASHED)).toBe('team/app.v2');
  });

  test('sanitises and appends the hash', () => {
    const fitted = fitName('team/my__app', SLASHED);

    expect(fitted).toBe(`team/my-app-${shortHash('team/my__app')}`);
    expect(fitted).not.toBe(fitName('team/my--app', SLASHED));
  });

  test('cuts without a trailing separator', () => {
    const name = `${'a'.repeat(20)}/${'b'.repeat(30)}`;
    const fitted = fitName(name, { ...SLASHED, maxLength: 21 + HASH_LENGTH + 1 });

    expect(fitted).toBe(`${'a'.repeat(20)}-${shortHash(name)}`);
  });

  test('pads short names with the hash', () => {
    expect(fitName('ab', FLAT)).toBe(`ab-${shortHash('ab')}`);
    expect(fitName('prod/api', FLAT), 'the 20-character limit leaves 3 before the suffix').toBe(`pro-${shortHash('prod/api')}`);
  });
});

describe('namespaceComponents', () => {
  test('builds service and cluster layouts', () => {
    expect(namespaceComponents('team/mirror', { mode: 'service', cluster: 'prod', service: 'api' })).toEqual(['team', 'mirror', 'prod', 'services', 'api']);
    expect(namespaceComponents('', { mode: 'cluster', cluster: 'prod' })).toEqual(['prod', 'shared']);
  });

  test('rejects an invalid cluster id', () => {
    expect(() => namespaceComponents('', { mode: 'cluster', cluster: 'Prod' })).toThrow(InvalidInputError);
    expect(() => namespaceComponents('', { mode: 'service', cluster: 'prod' })).toThrow('service is required');
  });
});
