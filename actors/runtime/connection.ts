/**
 * One ws connection to a peer node, either direction: frame codec, heartbeat, close handling.
 * A peer that sends nothing (not even a pong) for `deadAfterMs` is declared dead and the socket
 * is terminated, which also catches a SIGSTOPped process whose kernel still holds the TCP socket.
 * Silence is counted in time our own event loop was free to read: while it was blocked, the
 * peer's frames (pings, pongs, messages) wait unread in our socket, so the heartbeat timer's
 * lateness (our blocked time) is left out. Without that, a block of ours longer than
 * `deadAfterMs` declared every live peer dead at once (and the supervisor then SIGKILLed a busy
 * engine). A peer that really is silent (hung, SIGSTOPped) is still declared dead after
 * `deadAfterMs` of our free time.
 */
import type WebSocket from 'ws';
import { isMicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { ConnState } from './frame-rules.ts';
import { badFrame, CLOSE, closeReason, decodeFrame, encodeFrame, type Frame } from './frames.ts';

export interface ConnectionOptions {
  /** [heartbeatMs=400] ping interval. */
  heartbeatMs: number;
  /** [deadAfterMs=1600] silence after which the peer is dead. */
  deadAfterMs: number;
}

export const DEFAULT_CONNECTION_OPTIONS: ConnectionOptions = { heartbeatMs: 400, deadAfterMs: 1600 };

/**
 * Every inbound frame is decoded and schema-checked, then handed to `onFrame`. Whatever fails
 * there closes this connection only: a BAD_FRAME (schema, or a frame-rules violation thrown by
 * `onFrame`) with close code 4400 and the error code + field in the reason, anything else (a bug
 * on our side) with 1011; both are logged, neither reaches the runtime as an exception.
 */
export class Connection implements ConnState {
  /** The peer's node id, known after its hello (inbound) or set by the opener (outbound). */
  peerNodeId: string | null = null;
  /** When this connection was made (performance.now()): crossing dials are told apart by it. */
  readonly createdAt = performance.now();
  isOpen = true;
  isGreeted = false;
  isJoined = false;
  /** When the last frame from the peer was read (performance.now()). */
  private lastSeen = performance.now();
  /** When the heartbeat timer last ran, and our loop's blocked time (the timer's lateness) since lastSeen. */
  private lastTick = performance.now();
  private blockedMs = 0;
  private timer: NodeJS.Timeout;
  private closeHandlers: ((reason: string) => void)[] = [];

  constructor(
    readonly ws: WebSocket,
    readonly label: string,
    readonly direction: 'in' | 'out',
    private onFrame: (f: Frame, c: Connection) => void,
    opts: ConnectionOptions,
  ) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.seen();
      if (!this.isOpen) return;
      try {
        if (!isBinary) throw badFrame('frame', 'text frames are not part of the protocol');
        this.onFrame(decodeFrame(data), this);
      } catch (e) {
        this.refuse(e);
      }
    });
    ws.on('pong', () => this.seen());
    ws.on('ping', () => this.seen());
    ws.on('close', (code: number, reason: Buffer) => this.finish(`closed ${code} ${reason.toString()}`));
    ws.on('error', (e: Error) => {
      log.debug('connection error', { conn: this.label, error: e.message });
      this.finish(`error ${e.message}`);
    });
    this.timer = setInterval(() => {
      const now = performance.now();
      this.blockedMs += Math.max(0, now - this.lastTick - opts.heartbeatMs);
      this.lastTick = now;
      if (now - this.lastSeen - this.blockedMs > opts.deadAfterMs) {
        log.warn('peer missed heartbeats, terminating', { conn: this.label, peer: this.peerNodeId });
        this.ws.terminate();
        this.finish('heartbeat timeout');
        return;
      }
      try {
        this.ws.ping();
      } catch {
        /* closing */
      }
    }, opts.heartbeatMs);
    this.timer.unref();
  }

  private seen(): void {
    this.lastSeen = performance.now();
    this.blockedMs = 0;
  }

  send(f: Frame): boolean {
    if (!this.isOpen) return false;
    this.ws.send(encodeFrame(f), { binary: true });
    return true;
  }

  /** Closes the connection over a frame it could not take (see the class comment). */
  private refuse(e: unknown): void {
    if (isMicroserveError(e, 'BAD_FRAME')) {
      log.warn('closing connection: bad frame', { conn: this.label, peer: this.peerNodeId, error: e.message });
      this.close(CLOSE.BAD_FRAME, closeReason(e.code, e.message));
      return;
    }
    log.error('closing connection: frame handler failed', { conn: this.label, peer: this.peerNodeId, error: e as Error, stack: (e as Error)?.stack });
    this.close(CLOSE.INTERNAL, closeReason('INTERNAL', (e as Error)?.message ?? String(e)));
  }

  onClose(fn: (reason: string) => void): void {
    this.closeHandlers.push(fn);
  }

  close(code: number = CLOSE.SHUTDOWN, reason = ''): void {
    if (!this.isOpen) return;
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.terminate();
    }
    // a peer that never completes the closing handshake must not keep us waiting
    setTimeout(() => this.ws.terminate(), 1000).unref();
    this.finish(`closed by us ${code}`);
  }

  private finish(reason: string): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    clearInterval(this.timer);
    for (const fn of this.closeHandlers) fn(reason);
  }
}
