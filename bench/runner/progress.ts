/**
 * The progress bar (cli-progress) on stderr while a point runs; nothing when stderr is not a
 * terminal (CI logs, pipes) or when turned off.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  start(label: string, total: number): void;
  tick(isOk: boolean): void;
  stop(): void;
}

export function makeProgress(isEnabled: boolean): Progress {
  if (!isEnabled || !process.stderr.isTTY) return { start() {}, tick() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: '{label} |{bar}| {value}/{total} requests, {failed} failed, {duration_formatted}', hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  let failed = 0;
  let isActive = false;
  return {
    start(label, total) {
      failed = 0;
      isActive = true;
      bar.start(total, 0, { label, failed });
    },
    tick(isOk) {
      if (!isOk) failed++;
      bar.increment(1, { failed });
    },
    stop() {
      if (isActive) bar.stop();
      isActive = false;
    },
  };
}
