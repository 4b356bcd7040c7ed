// The recorded-response server that stands in for a Kubernetes API server, a Nomad agent or a
// Consul agent in the discovery specs (none can be installed here). It serves JSON shaped like
// the real APIs' documented answers from fixture files and CHECKS what it is sent: paths,
// selectors and filter expressions, namespace parameters, tokens, and client certificates on its
// TLS listener. Every request is recorded for the specs to inspect.
//
//   node tests/fakes/control_plane.js CONFIG.json
//   CONFIG: { "api": "kube" | "nomad" | "consul", "fixtures": "path.json",
//             "tls": { "cert": path, "key": path, "ca": path, "client_certs": "require" | "request" },
//             "auth": { ...per API: see kube.js, nomad.js, consul.js }, "region": "global" }
// It listens on three free ports of 127.0.0.1 and prints {"port": N, "control": M, "proxy": P}
// on one line. The control listener (plain HTTP): GET/DELETE /requests, GET /proxied, POST /fail
// {status, count, body}, DELETE /fail, PUT /auth {...}, and the API's own routes (PUT /pods,
// PUT /registrations, ...). The proxy listener is an HTTP proxy (CONNECT tunnels and absolute-URI
// requests) that only reaches the API listener and records what it was asked for.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const fixtures = config.fixtures ? JSON.parse(fs.readFileSync(config.fixtures, 'utf8')) : {};
const api = require(`./${config.api}.js`).create(config, fixtures);

const requests = [];
let failing = null; // { status, count, body }

function parseQuery(search) {
  const q = {};
  new URLSearchParams(search).forEach((v, k) => { q[k] = v; });
  return q;
}

let apiPort = 0;

function onRequest(req, res) {
  const u = new URL(req.url, 'http://127.0.0.1');
  const cert = req.socket.getPeerCertificate ? req.socket.getPeerCertificate() : null;
  const record = {
    method: req.method, path: u.pathname, query: parseQuery(u.search), raw_query: u.search.replace(/^\?/, ''),
    headers: req.headers, servername: req.socket.servername || null,
    clientCert: cert && cert.subject && req.socket.authorized ? cert.subject.CN : null,
  };
  requests.push(record);
  res.on('finish', () => { record.status = res.statusCode; });
  if (failing && failing.count !== 0) {
    if (failing.count > 0) failing.count -= 1;
    const body = failing.body || 'injected failure';
    res.writeHead(failing.status, { 'Content-Type': failing.contentType || 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  try {
    api.handle(req, res, record, apiPort);
  } catch (e) {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end(`fake server error: ${e.stack}`);
  }
}

let server;
if (config.tls) {
  server = https.createServer({
    cert: fs.readFileSync(config.tls.cert), key: fs.readFileSync(config.tls.key),
    ca: config.tls.ca ? fs.readFileSync(config.tls.ca) : undefined,
    requestCert: Boolean(config.tls.client_certs),
    rejectUnauthorized: config.tls.client_certs === 'require',
  }, onRequest);
} else {
  server = http.createServer(onRequest);
}
server.keepAliveTimeout = 30000;

function readBody(req) {
  return new Promise((resolve) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => {
      const text = Buffer.concat(parts).toString();
      resolve(text ? JSON.parse(text) : null);
    });
  });
}

const control = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  const body = await readBody(req);
  const json = (code, doc) => {
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(doc));
  };
  if (req.method === 'GET' && path === '/requests') return json(200, requests);
  if (req.method === 'DELETE' && path === '/requests') { requests.length = 0; return json(200, {}); }
  if (req.method === 'GET' && path === '/proxied') return json(200, proxied);
  if (req.method === 'POST' && path === '/fail') { failing = Object.assign({ count: -1 }, body); return json(200, failing); }
  if (req.method === 'DELETE' && path === '/fail') { failing = null; return json(200, {}); }
  if (req.method === 'PUT' && path === '/auth') { config.auth = body; return json(200, body); }
  if (api.control(req.method, path, body, res) === false) return json(404, { error: `no control route ${req.method} ${path}` });
  return undefined;
});

// The proxy: what it was asked for ("CONNECT host:port" or "GET http://..."), oldest first.
const proxied = [];
const proxy = http.createServer((req, res) => {
  proxied.push(`${req.method} ${req.url}`);
  const u = new URL(req.url);
  if (u.port !== String(apiPort)) { res.writeHead(502); res.end('the test proxy only reaches the API'); return; }
  const out = http.request({ host: '127.0.0.1', port: apiPort, method: req.method, path: u.pathname + u.search, headers: req.headers },
    (up) => { res.writeHead(up.statusCode, up.headers); up.pipe(res); });
  out.on('error', () => { res.writeHead(502); res.end(); });
  req.pipe(out);
});
proxy.on('connect', (req, sock, head) => {
  proxied.push(`CONNECT ${req.url}`);
  if (!req.url.endsWith(`:${apiPort}`)) { sock.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'); return; }
  const up = net.connect(apiPort, '127.0.0.1', () => {
    sock.write('HTTP/1.1 200 Connection established\r\n\r\n');
    up.write(head);
    up.pipe(sock);
    sock.pipe(up);
  });
  up.on('error', () => sock.destroy());
  sock.on('error', () => up.destroy());
});

server.listen(0, '127.0.0.1', () => {
  apiPort = server.address().port;
  control.listen(0, '127.0.0.1', () => {
    proxy.listen(0, '127.0.0.1', () => {
      const ports = { port: apiPort, control: control.address().port, proxy: proxy.address().port };
      process.stdout.write(`${JSON.stringify(ports)}\n`);
    });
  });
});

process.on('SIGTERM', () => process.exit(0));
