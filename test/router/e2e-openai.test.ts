/**
 * End to end through `microserve up` (real CLI, real engine processes, `tiny` preset): the
 * official openai client (chat and completions, streamed and not, errors), and the same text
 * at temperature 0 under every built-in strategy (switched by editing the topology file).
 */
import { test } from 'uvu';
import { missingForE2e, startUp, type UpCluster } from './e2e-cluster.ts';
import { openaiClientScenario, sameTextEveryStrategyScenario } from './e2e-scenarios.ts';

const missing = missingForE2e();
if (missing.length > 0) {
  console.log(`e2e skipped: \`microserve up\` is not complete in this tree (missing ${missing.join(', ')})`);
  test.skip('openai client against microserve up', () => {});
  test.skip('same text at temperature 0 under every strategy', () => {});
} else {
  let c: UpCluster;
  test.before(async () => {
    c = await startUp([
      { name: 'e0', role: 'both' },
      { name: 'e1', role: 'both' },
    ]);
  });
  test.after(() => c?.close());
  test('openai client against microserve up: chat and completions, streamed and not, errors', () => openaiClientScenario(c));
  test('same text at temperature 0 under every strategy', () => sameTextEveryStrategyScenario(c));
}
test.run();
