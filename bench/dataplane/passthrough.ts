// The bare pass-through arm of bench/dataplane: the least any Node HTTP proxy can do — forward each request
// to the upstream over a keep-alive agent and pipe the response back, reading nothing, recording nothing.
// trainflow's proxy does this plus session routing, token recording and the ledger; the difference in CPU
// per request between the two is what the recording costs.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const upstream = new URL(process.argv[2] ?? 'http://127.0.0.1:8000');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const out = http.request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent,
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  out.on('error', (err) => {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(String(err));
  });
  req.pipe(out);
});
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () =>
  process.stdout.write(`PASSTHROUGH ${(server.address() as AddressInfo).port}\n`),
);
