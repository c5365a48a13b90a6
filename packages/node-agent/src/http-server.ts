import { createServer, type Server } from 'node:http';
import type { Agent } from './agent.js';

export interface HttpServerOptions {
  readonly port: number;
  readonly host?: string;
  readonly agent: Agent;
}

/**
 * The agent's operator endpoints: `/metrics` (Prometheus), `/healthz` (the
 * event loop answers: a blocked loop fails the liveness probe by timing out),
 * `/readyz` (stages up, Redis answering).
 */
export async function startHttpServer(options: HttpServerOptions): Promise<Server> {
  const { agent } = options;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      void agent.readiness().then(({ ready, missing }) => {
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : `not ready: ${missing.join(', ')}\n`);
      });
    } else if (path === '/metrics') {
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
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  return server;
}
