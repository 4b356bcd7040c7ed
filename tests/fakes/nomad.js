// The Nomad services API part of the recorded-response server: GET /v1/services (one namespace
// or all with namespace=*, grouped per namespace with each service's tags) and
// GET /v1/service/:name (the registrations), both with go-bexpr `filter` expressions over the
// registrations, the `region` parameter and X-Nomad-Token ACLs limited to namespaces (a token
// sees only its namespaces under namespace=*, and gets 403 for one it may not read).
'use strict';

const bexpr = require('./bexpr');

function create(config, fixtures) {
  let registrations = (fixtures && fixtures.registrations) || [];
  let index = 100;
  const region = config.region || 'global';

  function send(res, code, doc, extra) {
    const body = typeof doc === 'string' ? doc : JSON.stringify(doc);
    res.writeHead(code, Object.assign({
      'Content-Type': typeof doc === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
      'Content-Length': Buffer.byteLength(body),
    }, extra || {}));
    res.end(body);
  }

  const meta = () => ({ 'X-Nomad-Index': String(index), 'X-Nomad-KnownLeader': 'true', 'X-Nomad-LastContact': '0' });

  // The namespaces the request's token may read: null for all, or a list; false when refused.
  function allowed(req) {
    const acl = config.auth;
    if (!acl) return null;
    const token = req.headers['x-nomad-token'];
    if (!token) return acl.anonymous || false;
    if (!Object.prototype.hasOwnProperty.call(acl.tokens || {}, token)) return 'unknown';
    const ns = acl.tokens[token];
    return ns === '*' ? null : ns;
  }

  function handle(req, res, record) {
    const { path, query } = record;
    if (req.method !== 'GET') return send(res, 405, 'Invalid method');
    if (query.region && query.region !== region) return send(res, 500, 'No path to region');
    const namespaces = allowed(req);
    if (namespaces === 'unknown') return send(res, 403, 'ACL token not found');
    if (namespaces === false) return send(res, 403, 'Permission denied');
    const ns = query.namespace || 'default';
    const mayRead = (n) => namespaces === null || namespaces.includes(n);
    if (ns !== '*' && !mayRead(ns)) return send(res, 403, 'Permission denied');
    let filter = () => true;
    if (query.filter) {
      try {
        filter = bexpr.compile(query.filter);
      } catch (e) {
        return send(res, 400, `failed to read filter expression: ${e.message}`);
      }
    }
    let regs;
    try {
      regs = registrations.filter((r) => (ns === '*' || r.Namespace === ns) && mayRead(r.Namespace))
        .filter((r) => filter(r));
    } catch (e) {
      if (e instanceof bexpr.FilterError) return send(res, 400, e.message);
      throw e;
    }
    if (path === '/v1/services') {
      const byNs = new Map();
      regs.forEach((r) => {
        if (!byNs.has(r.Namespace)) byNs.set(r.Namespace, new Map());
        const svcs = byNs.get(r.Namespace);
        if (!svcs.has(r.ServiceName)) svcs.set(r.ServiceName, new Set());
        (r.Tags || []).forEach((t) => svcs.get(r.ServiceName).add(t));
      });
      const out = [...byNs.keys()].sort().map((n) => ({
        Namespace: n,
        Services: [...byNs.get(n).keys()].sort().map((s) => ({ ServiceName: s, Tags: [...byNs.get(n).get(s)].sort() })),
      }));
      return send(res, 200, out, meta());
    }
    const m = /^\/v1\/service\/([^/]+)$/.exec(path);
    if (m) {
      const name = decodeURIComponent(m[1]);
      return send(res, 200, regs.filter((r) => r.ServiceName === name), meta());
    }
    return send(res, 404, 'Not Found');
  }

  // Control: PUT /registrations [ ... ] replaces them all.
  function control(method, path, body, res) {
    if (method === 'PUT' && path === '/registrations') {
      registrations = body;
      index += 1;
      return send(res, 200, { index });
    }
    return false;
  }

  return { handle, control };
}

module.exports = { create };
