/**
 * The ws sockets under the runtime: a server that checks the cluster token at the HTTP upgrade
 * (401 otherwise, before any frame) and caps frame size, and an outbound dial that turns refusals
 * into typed errors. Frames and liveness are Connection's business.
 */
import { createServer, type Server } from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { tokensEqual } from './token.ts';

export interface WsServer {
  server: Server;
  wss: WebSocketServer;
  /** `ws://host:port` as bound. */
  url: string;
}

/** Binds host:port (0 picks a port); hands each authenticated socket to `onSocket`. */
export async function listenWs(
  host: string,
  port: number,
  token: string,
  maxPayload: number,
  onSocket: (ws: WebSocket, label: string) => void,
): Promise<WsServer> {
  const server = createServer((_req, res) => {
    res.writeHead(426).end('websocket only');
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  server.on('upgrade', (req, socket, head) => {
    const auth = req.headers['authorization'] ?? '';
    const given = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (!given || !tokensEqual(given, token)) {
      log.warn('refused unauthenticated connection', { remote: req.socket.remoteAddress });
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => onSocket(ws, `in:${req.socket.remotePort}`));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as { address: string; port: number };
  const h = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return { server, wss, url: `ws://${h}:${addr.port}` };
}

/** Opens a socket to `url` with the token; rejects UNAUTHORIZED on 401, CONNECTION_LOST otherwise. */
export function dialWs(url: string, token: string, maxPayload: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}` },
      maxPayload,
      perMessageDeflate: false,
      handshakeTimeout: 3000,
    });
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      ws.terminate();
      reject(e);
    };
    ws.once('unexpected-response', (_req, res) =>
      fail(new MicroserveError(res.statusCode === 401 ? 'UNAUTHORIZED' : 'CONNECTION_LOST', `${url} answered HTTP ${res.statusCode}`)),
    );
    ws.once('error', (e) => fail(new MicroserveError('CONNECTION_LOST', `cannot connect to ${url}: ${e.message}`)));
    ws.once('open', () => {
      settled = true;
      resolve(ws);
    });
  });
}
