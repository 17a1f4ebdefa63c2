/**
 * Which frame may come when, and from whom. A frame that passed its schema (frames.ts) can still
 * be out of place: a `dir` sent to control, an `env` before `hello`, a `reply` settling a query
 * that never went out on that connection. Each rule throws BAD_FRAME naming the field, and the
 * connection closes (Connection turns a thrown BAD_FRAME into close code 4400).
 *
 * The protocol, per connection:
 *   - the opener (direction `out`) sends `hello` first; the acceptor answers `welcome` first;
 *   - `reg` goes only to control, from a node that joined (`hello.join`);
 *   - `dir` comes only from control;
 *   - an `env` carries its origin in `from` (`node/<peer>`); only control relays others' frames;
 *   - a `reply` is accepted only on the connection its query left on (checked in system.ts,
 *     where the pending queries are).
 */
import { badFrame, type Frame } from './frames.ts';

/** The protocol state a Connection keeps for these rules. */
export interface ConnState {
  /** `in`: the peer dialed us (it says hello); `out`: we dialed it (it answers welcome). */
  readonly direction: 'in' | 'out';
  peerNodeId: string | null;
  /** Set once the first frame (hello inbound, welcome outbound) was accepted. */
  isGreeted: boolean;
  /** Inbound: the peer's hello asked to join the directory. */
  isJoined: boolean;
}

export interface NodeFacts {
  nodeId: string;
  isControl: boolean;
  controlId: string;
}

/** Throws BAD_FRAME when `f` may not arrive on `c` now; marks the greeting when it does. */
export function checkFrameAllowed(f: Frame, c: ConnState, self: NodeFacts): void {
  if (!c.isGreeted) {
    const first = c.direction === 'in' ? 'hello' : 'welcome';
    if (f.k !== first) throw badFrame('k', `'${first}' must be the first frame on this connection (got '${f.k}')`);
    if (f.k === 'hello' && f.nodeId === self.nodeId) throw badFrame('hello.nodeId', `'${f.nodeId}' is this node's own id`);
    if (f.k === 'hello' && f.nodeId === self.controlId && self.isControl) throw badFrame('hello.nodeId', `'${f.nodeId}' is reserved for control`);
    c.isGreeted = true;
    if (f.k === 'hello') c.isJoined = f.join;
    return;
  }
  switch (f.k) {
    case 'hello':
    case 'welcome':
      throw badFrame('k', `'${f.k}' after the greeting`);
    case 'reg':
      if (!self.isControl) throw badFrame('k', `'reg' goes to control only`);
      if (!c.isJoined) throw badFrame('k', `'reg' from a node that did not join`);
      return;
    case 'dir':
      if (self.isControl || c.peerNodeId !== self.controlId) throw badFrame('k', `'dir' comes from control only`);
      return;
    case 'env':
      if (c.peerNodeId !== self.controlId && f.from !== `node/${c.peerNodeId}`) {
        throw badFrame('env.from', `'${f.from}' is not the sender's node path 'node/${c.peerNodeId}'`);
      }
      return;
    case 'reply':
      if (!self.isControl && f.to !== `node/${self.nodeId}`) throw badFrame('reply.to', `'${f.to}' is not this node`);
      return;
  }
}
