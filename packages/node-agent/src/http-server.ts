import { createServer, type Server } from 'node:http';
import type { Agent } from './agent.js';

export interface HttpServerOptions {
  readonly port: number;
  /** The address to listen on. Default 127.0.0.1: metrics and health are for this host unless told otherwise (0.0.0.0 in a pod). */
  readonly host?: string;
  /** The agent, or a getter for it while it boots (until then /readyz and /metrics answer 503 "starting"). */
  readonly agent: Agent | (() => Agent | undefined);
}

export const HTTP_DEFAULTS = { host: '127.0.0.1' } as const;

/**
 * The agent's operator endpoints: `/metrics` (Prometheus), `/healthz` (the
 * event loop answers: a blocked loop fails the liveness probe by timing out),
 * `/readyz` (stages up, Redis answering). Each answers within a second while
 * Redis or PostgreSQL does not: what they read from servers is bounded in time.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<Server> {
  const current = typeof options.agent === 'function' ? options.agent : () => options.agent as Agent;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    const agent = current();
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      if (agent === undefined) {
        res.writeHead(503, { 'content-type': 'text/plain' }).end('not ready: starting\n');
        return;
      }
      void agent.readiness().then(({ ready, missing }) => {
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : `not ready: ${missing.join(', ')}\n`);
      });
    } else if (path === '/metrics') {
      if (agent === undefined) {
        res.writeHead(503, { 'content-type': 'text/plain' }).end('starting\n');
        return;
      }
      agent.metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': agent.metrics.contentType }).end(text),
        (error: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${error.message}\n`),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('try /metrics, /healthz or /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? HTTP_DEFAULTS.host, () => resolve());
  });
  return server;
}
