// Baseline gateway for gateway-get: Express with express-http-proxy in front
// of the Express product service (PRODUCT_URL), on the same route as the
// shop's gateway: GET /api/products/{id}.
//
// express-http-proxy sends `Connection: close` upstream by default: a new TCP
// connection per request. UPSTREAM_KEEPALIVE=1 reuses connections instead (a
// keep-alive agent), the stronger baseline; the suite measures both.
'use strict';

const http = require('http');
const express = require('express');
const proxy = require('express-http-proxy');

const port = Number(process.env.PORT || 3100);
const upstream = process.env.PRODUCT_URL || '127.0.0.1:3101';
const keepAlive = process.env.UPSTREAM_KEEPALIVE === '1';
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

const options = { proxyReqPathResolver: (req) => req.originalUrl };
if (keepAlive) {
  options.proxyReqOptDecorator = (opts) => {
    opts.headers.connection = 'keep-alive';
    opts.agent = agent;
    return opts;
  };
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');

app.use('/api/products', proxy(upstream, options));

app.listen(port, '127.0.0.1', () => {
  console.log(
    `express gateway listening on 127.0.0.1:${port}, proxying /api/products to ${upstream}` +
      (keepAlive ? ' over keep-alive connections' : ' (a connection per request)'),
  );
});
