import { createServer, type Server, Socket } from 'node:net';

/** A TCP proxy in front of a server, which a test can blackhole: connections stay open, nothing passes either way. */
export interface TcpProxy {
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's. */
  via(url: string): string;
  /** From now on nothing passes, as when the server froze or the network dropped every packet; new connections hang too. */
  blackhole(): void;
  /** Lets what was held pass again. */
  heal(): void;
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  connected: boolean;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let holding = false;
  const flow = (pair: Pair) => {
    pair.client.pipe(pair.upstream);
    pair.upstream.pipe(pair.client);
  };
  // Paused and unpiped sockets hold what arrives (and TCP back-pressure holds the sender): a blackhole, not a reset.
  const hold = (pair: Pair) => {
    pair.client.unpipe();
    pair.upstream.unpipe();
    pair.client.pause();
    pair.upstream.pause();
  };
  const server: Server = createServer((client) => {
    const pair: Pair = { client, upstream: new Socket(), connected: false };
    pairs.add(pair);
    for (const s of [client, pair.upstream]) s.on('error', () => s.destroy());
    client.on('close', () => {
      pair.upstream.destroy();
      pairs.delete(pair);
    });
    pair.upstream.on('close', () => client.destroy());
    client.pause();
    pair.upstream.connect(target.port, target.host, () => {
      pair.connected = true;
      if (holding) hold(pair);
      else flow(pair);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('tcp proxy: no address');
  const port = address.port;
  return {
    port,
    via(url: string) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    blackhole() {
      holding = true;
      for (const pair of pairs) hold(pair);
    },
    heal() {
      holding = false;
      for (const pair of pairs) if (pair.connected) flow(pair);
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
