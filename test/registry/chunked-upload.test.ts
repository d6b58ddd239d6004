import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { RegistryClient } from '../../src/registry/client.ts';
import { transferBlob } from '../../src/registry/blob-transfer.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startScriptedServer } from '../harness/scripted-server.ts';
import { FAST_RETRY, expectBreakingBlob, loopbackTransport, patterned, pushBlob, sha256Of } from './helpers.ts';

let source: TestRegistry;
let target: TestRegistry;
const transport = loopbackTransport();

beforeAll(async () => {
  [source, target] = await Promise.all([startRegistry(), startRegistry()]);
});

afterAll(async () => {
  await transport.close();
  await Promise.all([source?.stop(), target?.stop()]);
});

function client(host: string): RegistryClient {
  return new RegistryClient({ registry: host, insecure: true, transport, retry: FAST_RETRY });
}

describe('chunked upload from a stream', () => {
  test('abort mid-chunk ends the transfer', async () => {
    const blob = patterned(4 * 1024 * 1024, 'abort');
    const digest = await pushBlob(client(source.host), 'app', blob);
    const controller = new AbortController();
    const reason = new Error('stopped by the test');
    let seen = 0;

    const transfer = transferBlob(
      { source: client(source.host), sourceRepository: 'app', target: client(target.host), targetRepository: 'aborted' },
      digest,
      blob.length,
      {
        monolithicMaxBytes: 0,
        chunkBytes: 1024 * 1024,
        signal: controller.signal,
        // Aborts while the second PATCH streams its body.
        onBytes: (bytes) => {
          seen += bytes;
          if (seen > 1_500_000 && !controller.signal.aborted) controller.abort(reason);
        },
      },
    );

    await expect(transfer).rejects.toBe(reason);
    expect(await client(target.host).headBlob('aborted', digest)).toBeUndefined();
  });

  test('wrong source bytes are not committed', async () => {
    const server = await startScriptedServer();
    const blob = patterned(3 * 1024 * 1024, 'wrong');
    const digest = sha256Of(blob);
    const altered = Buffer.from(blob);
    altered.writeUInt8(altered.readUInt8(2_500_000) ^ 1, 2_500_000);
    server.expect({ method: 'GET', path: `/v2/app/blobs/${digest}`, reply: { status: 200, body: altered } });

    const transfer = transferBlob(
      { source: client(server.host), sourceRepository: 'app', target: client(target.host), targetRepository: 'wrong-source' },
      digest,
      blob.length,
      { monolithicMaxBytes: 0, chunkBytes: 1024 * 1024 },
    );

    await expect(transfer).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await client(target.host).headBlob('wrong-source', digest)).toBeUndefined();
  });

  // The source's broken connection reaches the PATCH as its body's error. It must be reported as the
  // source's error, without an upload status request that blames the target.
  test('source failure keeps its error', async () => {
    const server = await startScriptedServer();
    const blob = patterned(3 * 1024 * 1024, 'breaks');
    const digest = expectBreakingBlob(server, blob, 1_500_000, 3);
    await target.clearLog();

    const transfer = transferBlob(
      { source: client(server.host), sourceRepository: 'app', target: client(target.host), targetRepository: 'broken-source' },
      digest,
      blob.length,
      { monolithicMaxBytes: 0, chunkBytes: 1024 * 1024 },
    );

    await expect(transfer, 'the error of the last source read').rejects.toMatchObject({ code: expect.stringMatching(/^(UND_ERR_SOCKET|ECONNRESET)$/) });
    const statusChecks = (await target.requests()).filter((request) => request.method === 'GET' && request.path.includes('/blobs/uploads/'));
    expect(statusChecks, 'no upload status request for a failure of the source').toEqual([]);
  });
});
