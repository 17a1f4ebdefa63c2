/**
 * One ws connection to a peer node, either direction: frame codec, heartbeat, close handling.
 * A peer that sends nothing (not even a pong) for `deadAfterMs` is declared dead and the socket
 * is terminated, which also catches a SIGSTOPped process whose kernel still holds the TCP socket.
 */
import type WebSocket from 'ws';
import { log } from '../../common/log.ts';
import { CLOSE, decodeFrame, encodeFrame, type Frame } from './frames.ts';

export interface ConnectionOptions {
  /** [heartbeatMs=400] ping interval. */
  heartbeatMs: number;
  /** [deadAfterMs=1600] silence after which the peer is dead. */
  deadAfterMs: number;
}

export const DEFAULT_CONNECTION_OPTIONS: ConnectionOptions = { heartbeatMs: 400, deadAfterMs: 1600 };

export class Connection {
  /** The peer's node id, known after its hello (inbound) or set by the opener (outbound). */
  peerNodeId: string | null = null;
  isOpen = true;
  private lastSeen = Date.now();
  private timer: NodeJS.Timeout;
  private closeHandlers: ((reason: string) => void)[] = [];

  constructor(
    readonly ws: WebSocket,
    readonly label: string,
    private onFrame: (f: Frame, c: Connection) => void,
    opts: ConnectionOptions,
  ) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.lastSeen = Date.now();
      let f: Frame;
      try {
        if (!isBinary) throw new Error('text frame');
        f = decodeFrame(data);
      } catch (e) {
        log.warn('closing connection: malformed frame', { conn: this.label, error: (e as Error).message });
        this.close(CLOSE.BAD_FRAME, 'malformed frame');
        return;
      }
      this.onFrame(f, this);
    });
    ws.on('pong', () => (this.lastSeen = Date.now()));
    ws.on('ping', () => (this.lastSeen = Date.now()));
    ws.on('close', (code: number, reason: Buffer) => this.finish(`closed ${code} ${reason.toString()}`));
    ws.on('error', (e: Error) => {
      log.debug('connection error', { conn: this.label, error: e.message });
      this.finish(`error ${e.message}`);
    });
    this.timer = setInterval(() => {
      if (Date.now() - this.lastSeen > opts.deadAfterMs) {
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

  send(f: Frame): boolean {
    if (!this.isOpen) return false;
    this.ws.send(encodeFrame(f), { binary: true });
    return true;
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
