import { requireMirrorRegistry, type Config } from '../../config/config.ts';
import { redact } from '../../log/redact.ts';
import type { MirrorfleetProducer } from '../../../queues/producer.ts';
import { mirrorRequestSchema, parseMirrorRequest, type MirrorRequestInput, type MirrorResult } from '../../../queues/mirror.ts';
import { EXIT, UsageError, countOf, cutQuotedValues, cutText, readInputFile } from '../common.ts';
import { describeStillRunning, outcomeJson, waitForOutcome, type WaitOutcome } from '../wait.ts';

/**
 * `mirrorfleet mirror --from-file FILE|-`: one mirror job per line. Every line is checked before any job
 * is enqueued, so an invalid line leaves nothing half enqueued. Problems and results are numbered by
 * line of the file.
 */

/** Fields of a JSON request line: those of the mirror job payload. */
const REQUEST_FIELDS = Object.keys(mirrorRequestSchema.shape);

export interface FileOptions {
  /** File to read, or `-` for standard input. */
  path: string;
  /** Request fields from the command line; a JSON line overrides them. */
  template: Omit<MirrorRequestInput, 'source'>;
  json: boolean;
  wait: boolean;
  /** Time for all the jobs together, with `wait`. */
  timeoutSeconds: number;
}

export interface LineRequest {
  /** Line number in the file, from 1. */
  line: number;
  request: MirrorRequestInput;
}

/**
 * Reads the file and validates every line, registry included. Throws a UsageError that lists every
 * problem by line.
 */
export async function readFileRequests(options: Pick<FileOptions, 'path' | 'template'>, config: Config): Promise<LineRequest[]> {
  return parseRequests(await readInputFile(options.path), options.template, config);
}

/** Enqueues the requests of a file and, with `wait`, waits for them. Returns the exit code. */
export async function enqueueFile(producer: MirrorfleetProducer, requests: LineRequest[], options: FileOptions): Promise<number> {
  const name = options.path === '-' ? 'standard input' : cutText(options.path);
  const jobs = await producer.mirrorBulk(requests.map((entry) => entry.request));
  const enqueued = requests.map((entry, index) => ({ line: entry.line, jobId: jobs[index]!.id!, source: entry.request.source }));

  if (!options.wait) {
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ enqueued: enqueued.length, jobIds: enqueued.map((entry) => entry.jobId), jobs: enqueued })}\n`);
    } else {
      process.stdout.write(`enqueued ${countOf(enqueued.length, 'mirror job')} from ${name}\n`);
      for (const entry of enqueued) process.stdout.write(`  line ${entry.line}: job ${entry.jobId} ${cutText(entry.source)}\n`);
    }
    return EXIT.success;
  }

  // One deadline covers the whole file. Jobs are waited for in file order, so that the output follows the
  // file. A job that finished while an earlier one was waited for is read at once.
  const deadline = Date.now() + options.timeoutSeconds * 1000;
  const outcomes: Array<{ line: number; outcome: WaitOutcome<MirrorResult> }> = [];
  for (const entry of enqueued) {
    const remainingMs = Math.max(0, deadline - Date.now());
    const outcome = await waitForOutcome(producer.bullQueue, entry.jobId, remainingMs, (timeoutMs) => producer.wait(entry.jobId, { timeoutMs }));
    outcomes.push({ line: entry.line, outcome });
    if (!options.json) process.stdout.write(`line ${entry.line}: ${describeLineOutcome(outcome, options.timeoutSeconds)}\n`);
  }

  const failed = outcomes.filter((entry) => entry.outcome.status === 'failed').length;
  const running = outcomes.filter((entry) => entry.outcome.status === 'running').length;
  const completed = outcomes.length - failed - running;
  if (options.json) {
    const results = outcomes.map(({ line, outcome }) => ({ line, ...(outcome.status === 'completed' ? { jobId: outcome.jobId, state: 'completed', result: outcome.result } : outcomeJson(outcome)) }));
    process.stdout.write(`${JSON.stringify({ completed, failed, running, jobs: results })}\n`);
  } else {
    process.stdout.write(`${completed} completed, ${failed} failed, ${running} still waiting or running\n`);
  }
  if (failed > 0) return EXIT.failed;
  return running > 0 ? EXIT.stillRunning : EXIT.success;
}

/** Turns each line into a request on top of `template` and validates it as the producer and the workers do. */
function parseRequests(content: string, template: FileOptions['template'], config: Config): LineRequest[] {
  const requests: LineRequest[] = [];
  const problems: string[] = [];
  for (const [index, raw] of content.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const number = index + 1;
    let request: MirrorRequestInput;
    try {
      request = requestOf(line, template);
    } catch (error) {
      problems.push(`line ${number}: ${(error as Error).message}`);
      continue;
    }
    try {
      parseMirrorRequest(request);
      // The command line's --registry was checked already, but a JSON line may name another one. With no
      // registry declared here, the workers check it (the command printed a warning about that).
      if (request.registry !== template.registry && config.mirrorRegistries.length > 0) requireMirrorRegistry(config, request.registry);
      requests.push({ line: number, request });
    } catch (error) {
      const message = (error as Error).message.replace(/^invalid mirror request: /, '');
      problems.push(`line ${number}: ${cutQuotedValues(redact(message))}`);
    }
  }
  if (problems.length > 0) throw new UsageError(`nothing enqueued, ${countOf(problems.length, 'line')} invalid:\n  ${problems.join('\n  ')}`);
  if (requests.length === 0) throw new UsageError('nothing enqueued: --from-file lists no image (every line is blank or a comment)');
  return requests;
}

/** Reads one line: a JSON request object, or `SOURCE [SERVICE]`. */
function requestOf(line: string, template: FileOptions['template']): MirrorRequestInput {
  if (line.startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      // JSON.parse quotes the text it read, which may hold credentials, so quoted parts are left out.
      throw new Error(`invalid JSON: ${(error as Error).message.replace(/"(?:[^"\\]|\\.)*"/g, '…')}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('expected a JSON request object');
    // Checked here, because the schema's own message for an unknown key repeats the whole merged request.
    const unknown = Object.keys(parsed).filter((key) => !REQUEST_FIELDS.includes(key));
    if (unknown.length > 0) {
      const fields = unknown.map((key) => JSON.stringify(cutText(key))).join(', ');
      throw new Error(`unknown ${unknown.length === 1 ? 'field' : 'fields'} ${fields}; accepted: ${REQUEST_FIELDS.join(', ')}`);
    }
    return { ...template, ...parsed } as MirrorRequestInput;
  }
  const words = line.split(/\s+/);
  if (words.length > 2) throw new Error(`expected "SOURCE [SERVICE]", found ${words.length} words`);
  const [source, service] = words as [string, string | undefined];
  return { ...template, source, ...(service === undefined ? {} : { service }) };
}

/** Formats how the job of one line ended, after `line N: `. */
function describeLineOutcome(outcome: WaitOutcome<MirrorResult>, timeoutSeconds: number): string {
  if (outcome.status === 'completed') return `${outcome.result.action} ${cutText(outcome.result.source)} as ${outcome.result.pinned} (job ${outcome.jobId})`;
  if (outcome.status === 'failed') return `job ${outcome.jobId} failed: ${outcome.error.code}: ${redact(outcome.error.message)}`;
  return `job ${outcome.jobId} ${describeStillRunning(outcome.state, timeoutSeconds, outcome.jobId, outcome.queue)}`;
}
