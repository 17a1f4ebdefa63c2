/**
 * ActorSystem: the nact actors of one process plus the routing that makes a remote actor look
 * like a local one. One node per process. The control node (in `microserve up`) keeps the
 * cluster directory (path → node) and relays frames for nodes that have no server of their own
 * (CLI clients); other nodes join it, register their actors, and talk to each other directly.
 *
 * Lifecycle of a query to a remote path:
 *   1. `ref(path).query(msg, timeout)` allocates an id and a pending entry (timer armed);
 *   2. the directory names the hosting node; a direct connection is used or opened (else control relays);
 *   3. the hosting node delivers the envelope to the nact actor; the handler's result is sent
 *      back as a `reply` frame on the connection the query arrived on;
 *   4. the pending entry resolves, or fails at once if the hosting node or the carrying
 *      connection goes away (CONNECTION_LOST), or on its timeout (QUERY_TIMEOUT).
 */
import nact from 'nact';
import type { Server } from 'node:http';
import type { WebSocket, WebSocketServer } from 'ws';
import { MicroserveError, type WireError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { Connection, DEFAULT_CONNECTION_OPTIONS, type ConnectionOptions } from './connection.ts';
import { checkFrameAllowed, type NodeFacts } from './frame-rules.ts';
import type { DirEntry, Frame } from './frames.ts';
import { LocalActors } from './local-actors.ts';
import { PendingQueries } from './pending.ts';
import { dialWs, listenWs } from './sockets.ts';
import type { ActorRef, ActorSupervision, ActorSystemApi, Handler, SpawnOptions } from './types.ts';

export interface SystemOptions {
  /** Unique node id, e.g. `control`, `engine-p0`, `client-123`. */
  nodeId: string;
  /** Cluster token checked when a connection opens (both directions). */
  token: string;
  /** [listen=null] where this node's ws server binds; null: no server (a client). Port 0 picks one. */
  listen?: { host: string; port: number } | null;
  /** [controlUrl] control node to join; absent on the control node itself. */
  controlUrl?: string;
  /** [maxFrameBytes=64 MiB] frames above this close the connection with 1009. */
  maxFrameBytes?: number;
  connection?: Partial<ConnectionOptions>;
}

const CONTROL_ID = 'control';
/** Two connections to one peer made this close together are crossing dials, not a reconnect. */
const CROSSING_WINDOW_MS = 2000;
/** How long the crossed connection both nodes dropped stays open for replies already on their way. */
const CROSSING_GRACE_MS = 10_000;
export const nodePath = (nodeId: string) => `node/${nodeId}`;

export class ActorSystem implements ActorSystemApi {
  readonly nodeId: string;
  url: string | null = null;
  readonly isControl: boolean;
  private readonly opts: Required<Omit<SystemOptions, 'controlUrl' | 'connection'>> & { controlUrl?: string };
  private readonly connOpts: ConnectionOptions;
  private readonly local: LocalActors;
  private readonly directory = new Map<string, { nodeId: string; url: string | null }>();
  private readonly nodeUrls = new Map<string, string | null>();
  private readonly conns = new Map<string, Connection>();
  /** Crossed connections both nodes dropped, open for their grace period (install). */
  private readonly crossed = new Set<Connection>();
  private readonly opening = new Map<string, Promise<Connection | null>>();
  private readonly pending = new PendingQueries();
  private readonly goneListeners = new Set<(path: string, nodeId: string) => void>();
  private readonly addedListeners = new Set<(path: string, nodeId: string) => void>();
  private server: Server | null = null;
  private wss: WebSocketServer | null = null;
  private closed = false;
  private controlBackoffMs = 100;
  private joined: Promise<void> | null = null;
  private readonly facts: NodeFacts;

  private constructor(opts: SystemOptions) {
    if (!opts.nodeId || /[^a-zA-Z0-9_.-]/.test(opts.nodeId)) throw new TypeError(`bad nodeId '${opts.nodeId}'`);
    if (!opts.token) throw new TypeError('a cluster token is required');
    this.nodeId = opts.nodeId;
    this.isControl = !opts.controlUrl;
    this.opts = { listen: null, maxFrameBytes: 64 * 1024 * 1024, ...opts } as any;
    this.connOpts = { ...DEFAULT_CONNECTION_OPTIONS, ...opts.connection };
    this.facts = { nodeId: this.nodeId, isControl: this.isControl, controlId: CONTROL_ID };
    this.local = new LocalActors(nact.start(), this);
    this.local.directoryHasElsewhere = (p) => {
      const e = this.directory.get(p);
      return !!e && e.nodeId !== this.nodeId;
    };
  }

  /** Starts the node: binds its server (if any), then joins control (if not control). */
  static async start(opts: SystemOptions): Promise<ActorSystem> {
    const sys = new ActorSystem(opts);
    if (opts.listen) await sys.listen(opts.listen.host, opts.listen.port);
    if (sys.isControl) {
      sys.directory.set(nodePath(sys.nodeId), { nodeId: sys.nodeId, url: sys.url });
    } else {
      await sys.joinControl();
    }
    return sys;
  }

  // ------------------------------------------------------------------------------ public API

  spawn(path: string, handler: Handler, opts: SpawnOptions = {}): ActorRef {
    if (!/^[a-z]+(\/[a-zA-Z0-9_.-]+)?$/.test(path)) throw new TypeError(`bad actor path '${path}' (expected kind or kind/name)`);
    if (this.local.has(path)) throw new TypeError(`actor '${path}' already exists on this node`);
    this.local.spawn(path, handler, opts, () => this.unregister(path));
    const entry: DirEntry = [path, this.nodeId, this.url];
    this.directory.set(path, { nodeId: this.nodeId, url: this.url });
    if (this.isControl) this.broadcast({ k: 'dir', add: [entry] });
    else this.conns.get(CONTROL_ID)?.send({ k: 'reg', add: [entry] });
    return this.ref(path);
  }

  stop(path: string): void {
    this.local.stop(path);
  }

  kill(path: string, why = 'killed'): boolean {
    return this.local.kill(path, why);
  }

  restart(path: string): boolean {
    return this.local.restart(path);
  }

  supervision(): ActorSupervision[] {
    return this.local.supervision();
  }

  ref(path: string): ActorRef {
    return {
      path,
      dispatch: (msg: object) => this.send(path, msg, undefined),
      query: <R>(msg: object, timeoutMs: number) => this.query<R>(path, msg, timeoutMs),
    };
  }

  listActors(): { path: string; nodeId: string }[] {
    return [...this.directory].filter(([p]) => !p.startsWith('node/')).map(([path, e]) => ({ path, nodeId: e.nodeId }));
  }

  /** Node ids with an open connection to this node. */
  connectedNodes(): string[] {
    return [...this.conns].filter(([, c]) => c.isOpen).map(([id]) => id);
  }

  onActorGone(fn: (path: string, nodeId: string) => void): () => void {
    this.goneListeners.add(fn);
    return () => this.goneListeners.delete(fn);
  }

  /** Calls fn when an actor enters the directory (spawned here or reported by control). */
  onActorAdded(fn: (path: string, nodeId: string) => void): () => void {
    this.addedListeners.add(fn);
    return () => this.addedListeners.delete(fn);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.local.stopAll();
    this.pending.failAll(new MicroserveError('ACTOR_STOPPED', 'the local actor system was closed'));
    for (const c of [...this.conns.values(), ...this.crossed]) c.close(1001, 'shutdown');
    this.wss?.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  // ---------------------------------------------------------------------------- messaging

  private query<R>(path: string, msg: object, timeoutMs: number): Promise<R> {
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) throw new TypeError('query needs a timeout in ms (> 0)');
    const { id, promise } = this.pending.create<R>(path, timeoutMs);
    this.send(path, msg, id);
    return promise;
  }

  private settle(id: number, body: unknown, error?: WireError): void {
    this.pending.settle(id, body, error);
  }

  /** Sends `msg` to `path`; `id` set for a query from this node. */
  private send(path: string, msg: object, id: number | undefined): void {
    const type = typeof (msg as any)?.type === 'string' ? (msg as any).type : 'unknown';
    if (this.local.has(path) || this.local.wasStopped(path)) {
      const reply = id === undefined ? undefined : (body: unknown, error?: WireError) => this.settle(id, body, error);
      this.local.deliver(path, msg, nodePath(this.nodeId), reply);
      return;
    }
    this.forward({ k: 'env', to: path, from: nodePath(this.nodeId), id, type, body: msg }, id);
  }

  /** Routes an envelope that is not for a local actor (ours or one we relay as control). */
  private forward(f: Extract<Frame, { k: 'env' }>, localId: number | undefined, arrivedOn?: Connection): void {
    const entry = this.directory.get(f.to);
    const target = entry?.nodeId ?? (this.isControl ? null : CONTROL_ID);
    const notFound = () => {
      const err = new MicroserveError('ACTOR_NOT_FOUND', `no actor at '${f.to}'`).toWire();
      if (localId !== undefined) this.settle(localId, undefined, err);
      else if (f.id !== undefined && arrivedOn) arrivedOn.send({ k: 'reply', to: f.from, id: f.id, error: err });
      else log.debug('dropped message to unknown actor', { to: f.to, type: f.type });
    };
    if (target === null || target === this.nodeId) return notFound();
    const p = localId !== undefined ? this.pending.get(localId) : undefined;
    if (p) p.target = entry?.nodeId ?? null;
    void this.connFor(target).then((conn) => {
      if (!conn) {
        if (localId !== undefined)
          return this.settle(localId, undefined, { code: 'CONNECTION_LOST', message: `no connection to node '${target}' for '${f.to}'` });
        return notFound();
      }
      if (p) (p.via = conn.peerNodeId), (p.conn = conn);
      if (localId !== undefined && !this.pending.has(localId)) return; // timed out meanwhile
      conn.send(f);
    });
  }

  private sendReply(conn: Connection, to: string, id: number, body: unknown, error?: WireError): void {
    if (!conn.isOpen) return;
    try {
      conn.send(error ? { k: 'reply', to, id, error } : { k: 'reply', to, id, body });
    } catch (e) {
      // an unserialisable reply must not crash the node: report it as a typed error instead
      conn.send({ k: 'reply', to, id, error: { code: 'BAD_MESSAGE', message: `reply could not be encoded: ${(e as Error).message}` } });
    }
  }

  // ------------------------------------------------------------------------------- frames

  /** Handles a frame that passed its schema; a misplaced one throws BAD_FRAME (Connection closes). */
  private onFrame(f: Frame, conn: Connection): void {
    checkFrameAllowed(f, conn, this.facts);
    switch (f.k) {
      case 'hello':
        return this.onHello(f, conn);
      case 'welcome':
        conn.peerNodeId ??= f.nodeId;
        if (f.nodeId === CONTROL_ID && !this.isControl) {
          this.directory.clear();
          for (const [p, n, u] of f.directory) this.addEntry(p, n, u);
          for (const p of this.local.paths()) this.directory.set(p, { nodeId: this.nodeId, url: this.url });
        }
        return;
      case 'reg': {
        // a node registers and removes only its own actors
        const add = (f.add ?? []).filter((e) => e[1] === conn.peerNodeId && this.mayClaim(e[0], e[1]));
        const remove = (f.remove ?? []).filter((p) => this.directory.get(p)?.nodeId === conn.peerNodeId);
        for (const e of add) this.addEntry(...e);
        for (const p of remove) this.directory.delete(p);
        return this.broadcast({ k: 'dir', add, remove }, conn);
      }
      case 'dir':
        for (const e of f.add ?? []) this.addEntry(...e);
        for (const p of f.remove ?? []) this.removeEntry(p);
        for (const n of f.goneNodes ?? []) this.nodeGone(n);
        return;
      case 'env': {
        if (this.local.has(f.to)) {
          const reply = f.id === undefined ? undefined : (body: unknown, error?: WireError) => this.sendReply(conn, f.from, f.id!, body, error);
          return this.local.deliver(f.to, f.body, f.from, reply);
        }
        if (this.isControl) return this.forward(f, undefined, conn);
        if (f.id !== undefined) this.sendReply(conn, f.from, f.id, undefined, { code: 'ACTOR_NOT_FOUND', message: `no actor at '${f.to}' on node '${this.nodeId}'` });
        return;
      }
      case 'reply':
        if (f.to === nodePath(this.nodeId)) {
          // only the connection the query left on may answer it (a stray id is dropped)
          if (this.pending.get(f.id)?.via === conn.peerNodeId) this.settle(f.id, f.body, f.error);
          else log.debug('dropped a reply to no query of this connection', { id: f.id, peer: conn.peerNodeId });
          return;
        }
        if (this.isControl) {
          const n = this.directory.get(f.to)?.nodeId;
          const c = n ? this.conns.get(n) : undefined;
          if (c?.isOpen) c.send(f);
        }
        return;
    }
  }

  private onHello(f: Extract<Frame, { k: 'hello' }>, conn: Connection): void {
    conn.peerNodeId = f.nodeId;
    this.install(conn);
    this.nodeUrls.set(f.nodeId, f.url);
    if (this.isControl && f.join) {
      // a joining node: its actors and its node path enter the directory
      const all: DirEntry[] = [[nodePath(f.nodeId), f.nodeId, f.url], ...f.paths.map((p): DirEntry => [p, f.nodeId, f.url])];
      const add = all.filter((e) => this.mayClaim(e[0], f.nodeId));
      for (const e of add) this.addEntry(...e);
      conn.send({ k: 'welcome', nodeId: this.nodeId, directory: [...this.directory].map(([p, e]): DirEntry => [p, e.nodeId, e.url]) });
      this.broadcast({ k: 'dir', add }, conn);
    } else {
      conn.send({ k: 'welcome', nodeId: this.nodeId, directory: [] });
    }
  }

  /**
   * Whether `nodeId` may register `path`: free, already its own (a restarted process keeps its
   * node id), or held by a node that is gone. Never a path of this node's own actors.
   */
  private mayClaim(path: string, nodeId: string): boolean {
    const e = this.directory.get(path);
    if (!e || e.nodeId === nodeId) return true;
    if (e.nodeId === this.nodeId || this.conns.get(e.nodeId)?.isOpen) {
      log.warn('refused a path held by another node', { path, claimant: nodeId, holder: e.nodeId });
      return false;
    }
    return true;
  }

  private addEntry(path: string, nodeId: string, url: string | null): void {
    this.directory.set(path, { nodeId, url });
    if (!this.nodeUrls.has(nodeId) || url) this.nodeUrls.set(nodeId, url);
    for (const fn of this.addedListeners) fn(path, nodeId);
  }

  private removeEntry(path: string): void {
    const e = this.directory.get(path);
    if (!e || e.nodeId === this.nodeId) return;
    this.directory.delete(path);
    for (const fn of this.goneListeners) fn(path, e.nodeId);
  }

  private unregister(path: string): void {
    this.directory.delete(path);
    if (this.isControl) this.broadcast({ k: 'dir', remove: [path] });
    else this.conns.get(CONTROL_ID)?.send({ k: 'reg', remove: [path] });
  }

  /** A node went away: forget its actors, fail what waits on it, tell listeners. */
  private nodeGone(nodeId: string): void {
    if (nodeId === this.nodeId) return;
    const gone = [...this.directory].filter(([, e]) => e.nodeId === nodeId).map(([p]) => p);
    for (const p of gone) this.directory.delete(p);
    this.nodeUrls.delete(nodeId);
    this.pending.failWhere(
      (p) => p.target === nodeId || p.via === nodeId,
      new MicroserveError('CONNECTION_LOST', `node '${nodeId}' went away`),
    );
    const c = this.conns.get(nodeId);
    if (c) {
      this.conns.delete(nodeId);
      c.close(1000, 'node gone');
    }
    for (const p of gone) if (!p.startsWith('node/')) for (const fn of this.goneListeners) fn(p, nodeId);
  }

  private broadcast(f: Frame, except?: Connection): void {
    for (const c of this.conns.values()) if (c !== except && c.isOpen) c.send(f);
  }

  // -------------------------------------------------------------------------- connections

  private async listen(host: string, port: number): Promise<void> {
    const l = await listenWs(host, port, this.opts.token, this.opts.maxFrameBytes, (ws, label) => this.adopt(ws, label, 'in'));
    this.server = l.server;
    this.wss = l.wss;
    this.url = l.url;
  }

  private adopt(ws: WebSocket, label: string, direction: 'in' | 'out', peerNodeId?: string): Connection {
    const conn = new Connection(ws, label, direction, (f, c) => this.onFrame(f, c), this.connOpts);
    if (peerNodeId) conn.peerNodeId = peerNodeId;
    conn.onClose((reason) => this.onConnClosed(conn, reason));
    return conn;
  }

  /**
   * Makes `conn` the connection that carries frames to its peer. Two nodes that dial each other at
   * the same moment (two engines starting their first KV transfers to each other) each end up with
   * an inbound and an outbound connection: both keep the one the smaller node id dialed, so they
   * agree, and the other closes after CROSSING_GRACE_MS (a query that left on it gets its reply on
   * it meanwhile). Any other older connection is replaced at once.
   */
  private install(conn: Connection): void {
    const n = conn.peerNodeId!;
    const old = this.conns.get(n);
    if (!old || old === conn || !old.isOpen) {
      this.conns.set(n, conn);
      return;
    }
    const isCrossing = old.direction !== conn.direction && Math.abs(conn.createdAt - old.createdAt) < CROSSING_WINDOW_MS;
    if (!isCrossing) {
      this.conns.set(n, conn);
      old.close(1000, 'replaced');
      return;
    }
    const keep = (conn.direction === 'out') === (this.nodeId < n) ? conn : old;
    const drop = keep === conn ? old : conn;
    this.conns.set(n, keep);
    log.debug('crossing connections: keeping the one the smaller node dialed', { peer: n, keep: keep.label, drop: drop.label });
    this.crossed.add(drop);
    setTimeout(() => {
      this.crossed.delete(drop);
      drop.close(1000, 'crossed');
    }, CROSSING_GRACE_MS).unref();
  }

  private onConnClosed(conn: Connection, reason: string): void {
    const n = conn.peerNodeId;
    // queries that left on this connection would get their replies on it: they fail now, whether
    // it is the peer's current connection or one replaced or crossed
    this.pending.failWhere((p) => p.conn === conn, new MicroserveError('CONNECTION_LOST', `connection to '${n}' lost: ${reason}`));
    if (!n || this.conns.get(n) !== conn) return;
    this.conns.delete(n);
    log.debug('connection closed', { peer: n, reason });
    this.pending.failWhere((p) => p.via === n || p.target === n, new MicroserveError('CONNECTION_LOST', `connection to '${n}' lost: ${reason}`));
    if (this.closed) return;
    if (this.isControl) {
      // the joined node is gone: everyone forgets its actors
      this.nodeGone(n);
      this.broadcast({ k: 'dir', goneNodes: [n] });
    } else if (n === CONTROL_ID) {
      this.reconnectControl();
    }
  }

  /** Opens an outbound connection; resolves once the peer has accepted our hello. */
  private async open(url: string, expectNodeId: string | null, join: boolean): Promise<Connection> {
    const ws = await dialWs(url, this.opts.token, this.opts.maxFrameBytes);
    const conn = this.adopt(ws, `out:${url}`, 'out', expectNodeId ?? undefined);
    return new Promise((resolve, reject) => {
      // the Connection handles the welcome frame itself; here we only wait for it to arrive
      const onClose = () => reject(new MicroserveError('CONNECTION_LOST', `${url} closed during hello`));
      ws.once('close', onClose);
      ws.once('message', () => {
        ws.off('close', onClose);
        setImmediate(() => {
          if (conn.peerNodeId) this.install(conn);
          resolve(conn);
        });
      });
      conn.send({ k: 'hello', nodeId: this.nodeId, url: this.url, paths: join ? this.local.paths() : [], join });
    });
  }

  /** The connection that carries frames to `nodeId`: existing, newly opened, or control's relay. */
  private connFor(nodeId: string): Promise<Connection | null> {
    const c = this.conns.get(nodeId);
    if (c?.isOpen) return Promise.resolve(c);
    const url = this.nodeUrls.get(nodeId);
    if (!url || nodeId === CONTROL_ID) {
      if (this.isControl) return Promise.resolve(null);
      if (nodeId === CONTROL_ID) return this.joined ? this.joined.then(() => this.conns.get(CONTROL_ID) ?? null, () => null) : Promise.resolve(null);
      const ctl = this.conns.get(CONTROL_ID);
      return Promise.resolve(ctl?.isOpen ? ctl : null);
    }
    let p = this.opening.get(nodeId);
    if (!p) {
      p = this.open(url, nodeId, false).then(
        (conn) => conn,
        (e) => {
          log.debug('direct connection failed', { node: nodeId, error: (e as Error).message });
          return null;
        },
      );
      p.finally(() => this.opening.delete(nodeId));
      this.opening.set(nodeId, p);
    }
    return p;
  }

  private async joinControl(): Promise<void> {
    this.joined = this.open(this.opts.controlUrl!, CONTROL_ID, true).then((c) => {
      this.controlBackoffMs = 100;
      c.peerNodeId = CONTROL_ID;
      this.conns.set(CONTROL_ID, c);
    });
    await this.joined;
  }

  private reconnectControl(): void {
    const delay = this.controlBackoffMs;
    this.controlBackoffMs = Math.min(this.controlBackoffMs * 2, 2000);
    setTimeout(() => {
      if (this.closed) return;
      this.joinControl().catch((e) => {
        log.debug('rejoin failed, retrying', { error: (e as Error).message, inMs: this.controlBackoffMs });
        this.reconnectControl();
      });
    }, delay).unref();
  }
}
