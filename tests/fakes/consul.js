// The Consul catalog part of the recorded-response server: GET /v1/catalog/services (service
// name -> tags) and GET /v1/catalog/service/:name (the service instances with their node), both
// with go-bexpr `filter` expressions over the catalog's service entries, the `ns` and
// `partition` parameters, and X-Consul-Token ACLs: an unknown token gets 403 "ACL not found",
// no token reads as anonymous, whose results are filtered to nothing (as a default-deny agent
// answers) with X-Consul-Results-Filtered-By-ACLs.
'use strict';

const bexpr = require('./bexpr');

function create(config, fixtures) {
  let entries = (fixtures && fixtures.entries) || [];
  let index = 200;

  function send(res, code, doc, extra) {
    const body = typeof doc === 'string' ? doc : JSON.stringify(doc);
    res.writeHead(code, Object.assign({
      'Content-Type': typeof doc === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
      'Content-Length': Buffer.byteLength(body),
    }, extra || {}));
    res.end(body);
  }

  function meta(filtered) {
    const h = { 'X-Consul-Index': String(index), 'X-Consul-KnownLeader': 'true', 'X-Consul-LastContact': '0',
      'X-Consul-Effective-Consistency': 'leader' };
    if (filtered) h['X-Consul-Results-Filtered-By-ACLs'] = 'true';
    return h;
  }

  function handle(req, res, record) {
    const { path, query } = record;
    if (req.method !== 'GET') return send(res, 405, 'method not allowed');
    let anonymous = false;
    if (config.auth) {
      let token = req.headers['x-consul-token'];
      const bearer = req.headers.authorization || '';
      if (!token && bearer.startsWith('Bearer ')) token = bearer.slice(7);
      if (!token) anonymous = true;
      else if (!(config.auth.tokens || []).includes(token)) return send(res, 403, 'ACL not found');
    }
    let filter = () => true;
    if (query.filter) {
      try {
        filter = bexpr.compile(query.filter);
      } catch (e) {
        return send(res, 400, `Failed to create boolean expression evaluator: ${e.message}`);
      }
    }
    const ns = query.ns || 'default';
    const partition = query.partition || 'default';
    let found;
    try {
      found = anonymous ? [] : entries.filter((e) => (e.Namespace || 'default') === ns &&
        (e.Partition || 'default') === partition).filter((e) => filter(e));
    } catch (e) {
      if (e instanceof bexpr.FilterError) return send(res, 400, e.message);
      throw e;
    }
    if (path === '/v1/catalog/services') {
      const out = {};
      found.forEach((e) => {
        out[e.ServiceName] = [...new Set([...(out[e.ServiceName] || []), ...(e.ServiceTags || [])])].sort();
      });
      return send(res, 200, out, meta(anonymous));
    }
    const m = /^\/v1\/catalog\/service\/([^/]+)$/.exec(path);
    if (m) {
      const name = decodeURIComponent(m[1]);
      return send(res, 200, found.filter((e) => e.ServiceName === name), meta(anonymous));
    }
    return send(res, 404, 'Not Found');
  }

  // Control: PUT /entries [ ... ] replaces the catalog.
  function control(method, path, body, res) {
    if (method === 'PUT' && path === '/entries') {
      entries = body;
      index += 1;
      return send(res, 200, { index });
    }
    return false;
  }

  return { handle, control };
}

module.exports = { create };
