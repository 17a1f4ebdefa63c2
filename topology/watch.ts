/**
 * Hot reload: watches a topology file and reports each new content, parsed (or the reason it was
 * refused). Robust to editors that save by writing a temp file and renaming it over the original
 * (vim, VS Code, `sed -i`): it watches the *folder* and filters by file name, so the watch
 * survives the inode changing. Events are debounced (an editor's save is several events) and
 * compared by content hash: touching the file, or writing the same bytes, reports nothing. A slow
 * poll of the file's mtime and size backs fs.watch up where it misses events (network mounts).
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import { parseTopology, type LoadOptions } from './load.ts';
import type { Topology } from './types.ts';

export type TopologyChange =
  /** `receivedAt`: performance.now() once the new content was read (reconfiguration starts here). */
  | { isValid: true; topology: Topology; hash: string; receivedAt: number }
  | { isValid: false; error: MicroserveError; hash: string; receivedAt: number };

export interface WatchOptions extends LoadOptions {
  /** [debounceMs=30] quiet time after the last event before the file is read. */
  debounceMs?: number;
  /** [pollMs=1000] mtime/size poll interval backing fs.watch up; 0 turns it off. */
  pollMs?: number;
}

export interface TopologyWatcher {
  /** Hash of the content last reported (or read at start). */
  readonly hash: string;
  close(): void;
}

export const hashText = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * Calls `onChange` for every new content of `path` (not for the content it has at the start).
 * An `onChange` that returns a promise is awaited before the next change is reported, so applies
 * never overlap; changes made meanwhile are coalesced into one.
 */
export function watchTopology(path: string, onChange: (c: TopologyChange) => void | Promise<void>, opts: WatchOptions = {}): TopologyWatcher {
  const file = resolve(path);
  const name = basename(file);
  const debounceMs = opts.debounceMs ?? 30;
  let hash = readHash(file) ?? '';
  let stamp = statStamp(file);
  let timer: NodeJS.Timeout | null = null;
  let isBusy = false;
  let isPending = false;
  let isClosed = false;

  const check = async () => {
    timer = null;
    if (isClosed) return;
    if (isBusy) return void (isPending = true);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return; // mid-rename or deleted: the next event (or poll) reads it
    }
    const receivedAt = performance.now();
    stamp = statStamp(file);
    const h = hashText(text);
    if (h === hash) return;
    hash = h;
    let change: TopologyChange;
    try {
      change = { isValid: true, topology: parseTopology(text, file, opts), hash: h, receivedAt };
    } catch (e) {
      change = { isValid: false, error: e as MicroserveError, hash: h, receivedAt };
    }
    isBusy = true;
    try {
      await onChange(change);
    } catch (e) {
      log.error('topology change handler failed', { file, error: e as Error });
    } finally {
      isBusy = false;
      if (isPending) {
        isPending = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (isClosed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void check(), debounceMs);
  };

  const watcher: FSWatcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
    if (!changed || changed.toString() === name) schedule();
  });
  watcher.on('error', (e) => log.warn('topology watch error (the poll keeps watching)', { file, error: e }));
  const pollMs = opts.pollMs ?? 1000;
  const poller =
    pollMs > 0
      ? setInterval(() => {
          const s = statSync(file, { throwIfNoEntry: false });
          const now = s ? `${s.mtimeMs}:${s.size}:${s.ino}` : '';
          if (now !== stamp) schedule();
        }, pollMs)
      : null;
  poller?.unref();

  return {
    get hash() {
      return hash;
    },
    close() {
      isClosed = true;
      watcher.close();
      if (poller) clearInterval(poller);
      if (timer) clearTimeout(timer);
    },
  };
}

function readHash(file: string): string | null {
  try {
    return hashText(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

function statStamp(file: string): string {
  const s = statSync(file, { throwIfNoEntry: false });
  return s ? `${s.mtimeMs}:${s.size}:${s.ino}` : '';
}
