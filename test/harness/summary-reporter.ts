import type { SerializedError } from 'vitest';
import type { Reporter, TestModule } from 'vitest/node';

/**
 * Prints one closing line, `tests: N passed, N failed, N skipped`, which CI reads to count the run.
 * A test that did not run because its file failed outside any test (in a hook or while loading) counts
 * as failed, and so does each error thrown outside a test, so that a failing run never reads "0 failed".
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const testModule of testModules) {
      const moduleFailed = testModule.state() === 'failed';
      let failedInModule = 0;
      for (const testCase of testModule.children.allTests()) {
        const state = testCase.result().state;
        if (state === 'passed') {
          passed += 1;
        } else if (state === 'failed' || moduleFailed) {
          failedInModule += 1;
        } else {
          skipped += 1;
        }
      }
      // A file that fails while loading has no tests to count.
      failed += moduleFailed ? Math.max(failedInModule, 1) : failedInModule;
    }
    failed += unhandledErrors.length;
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
