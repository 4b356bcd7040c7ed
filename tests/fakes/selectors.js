// Kubernetes label and field selectors (the labelSelector and fieldSelector query parameters),
// parsed with the API server's syntax and rules for the recorded-response server: a selector the
// real server would refuse gets the same 400, and pods are matched the same way.
'use strict';

class SelectorError extends Error {}

const qualifiedName = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const dnsSubdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const labelValue = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function checkKey(key) {
  const parts = key.split('/');
  const name = parts.length === 2 ? parts[1] : parts[0];
  if (parts.length > 2 || (parts.length === 2 && (!dnsSubdomain.test(parts[0]) || parts[0].length > 253)) ||
      !qualifiedName.test(name) || name.length > 63) {
    throw new SelectorError(`unable to parse requirement: invalid label key "${key}": name part must consist of ` +
      "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
  }
}

function checkValue(v) {
  if (v.length > 63 || !labelValue.test(v)) {
    throw new SelectorError(`unable to parse requirement: invalid label value: "${v}": a valid label must be an ` +
      "empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an " +
      'alphanumeric character');
  }
}

// Splits on commas outside parentheses.
function splitTop(s) {
  const out = [];
  let depth = 0;
  let cur = '';
  for (const c of s) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) { out.push(cur); cur = ''; } else cur += c;
  }
  out.push(cur);
  return out;
}

// Returns a list of requirements { key, op, values } for a label selector.
function parseLabels(src) {
  if (src === undefined || src.trim() === '') return [];
  return splitTop(src).map((raw) => {
    const r = raw.trim();
    let m;
    if ((m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(r))) {
      checkKey(m[1]);
      const values = m[3].split(',').map((v) => v.trim());
      values.forEach(checkValue);
      return { key: m[1], op: m[2], values };
    }
    if ((m = /^([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)$/.exec(r))) {
      checkKey(m[1]);
      checkValue(m[3]);
      return { key: m[1], op: m[2] === '!=' ? '!=' : '=', values: [m[3]] };
    }
    if ((m = /^!\s*(\S+)$/.exec(r))) { checkKey(m[1]); return { key: m[1], op: '!', values: [] }; }
    if ((m = /^(\S+)$/.exec(r))) { checkKey(m[1]); return { key: m[1], op: 'exists', values: [] }; }
    throw new SelectorError(`unable to parse requirement: found '${r}', expected: identifier`);
  });
}

function matchLabels(reqs, labels) {
  labels = labels || {};
  return reqs.every((q) => {
    const has = Object.prototype.hasOwnProperty.call(labels, q.key);
    const v = labels[q.key];
    switch (q.op) {
      case '=': return has && v === q.values[0];
      case '!=': return !has || v !== q.values[0];
      case 'in': return has && q.values.includes(v);
      case 'notin': return !has || !q.values.includes(v);
      case 'exists': return has;
      case '!': return !has;
      default: return false;
    }
  });
}

// The pod fields the API server lets a field selector use (pkg/registry/core/pod's
// ToSelectableFields), and where they live in a pod.
const podFields = {
  'metadata.name': (p) => p.metadata.name,
  'metadata.namespace': (p) => p.metadata.namespace,
  'spec.nodeName': (p) => (p.spec || {}).nodeName || '',
  'spec.restartPolicy': (p) => (p.spec || {}).restartPolicy || '',
  'spec.schedulerName': (p) => (p.spec || {}).schedulerName || '',
  'spec.serviceAccountName': (p) => (p.spec || {}).serviceAccountName || '',
  'spec.hostNetwork': (p) => String(Boolean((p.spec || {}).hostNetwork)),
  'status.phase': (p) => (p.status || {}).phase || '',
  'status.podIP': (p) => (p.status || {}).podIP || '',
  'status.nominatedNodeName': (p) => (p.status || {}).nominatedNodeName || '',
};

function parseFields(src) {
  if (src === undefined || src.trim() === '') return [];
  return src.split(',').map((raw) => {
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(raw.trim());
    if (!m) throw new SelectorError(`invalid selector: '${src}'; can't understand '${raw}'`);
    if (!podFields[m[1]]) throw new SelectorError(`field label not supported: ${m[1]}`);
    return { field: m[1], op: m[2] === '!=' ? '!=' : '=', value: m[3] };
  });
}

function matchFields(reqs, pod) {
  return reqs.every((q) => {
    const v = podFields[q.field](pod);
    return q.op === '=' ? v === q.value : v !== q.value;
  });
}

module.exports = { parseLabels, matchLabels, parseFields, matchFields, SelectorError };
