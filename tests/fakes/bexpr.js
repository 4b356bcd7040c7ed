// The filter expressions of HashiCorp's go-bexpr (the `filter` query parameter of Nomad and
// Consul), parsed and evaluated the way those servers do, for the recorded-response servers:
// a filter the real server would reject is rejected here too, with a 400 and its message.
'use strict';

class FilterError extends Error {}

function tokenize(src) {
  const out = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) { i++; continue; }
    if (c === '(' || c === ')') { out.push({ t: c, at: i }); i++; continue; }
    if (src.startsWith('==', i) || src.startsWith('!=', i)) { out.push({ t: 'op', v: src.substr(i, 2), at: i }); i += 2; continue; }
    if (c === '"') {
      let s = '';
      let j = i + 1;
      for (; j < src.length && src[j] !== '"'; j++) {
        if (src[j] === '\\') {
          j++;
          if (j >= src.length) break;
          const e = src[j];
          s += e === 'n' ? '\n' : e === 't' ? '\t' : e;
        } else {
          s += src[j];
        }
      }
      if (j >= src.length) throw new FilterError(`1:${i + 1} (${i}): unterminated string literal`);
      out.push({ t: 'str', v: s, at: i });
      i = j + 1;
      continue;
    }
    if (c === '`') {
      const j = src.indexOf('`', i + 1);
      if (j < 0) throw new FilterError(`1:${i + 1} (${i}): unterminated raw string literal`);
      out.push({ t: 'str', v: src.slice(i + 1, j), at: i });
      i = j + 1;
      continue;
    }
    const m = /^[A-Za-z0-9_.\-\[\]/]+/.exec(src.slice(i));
    if (!m) throw new FilterError(`1:${i + 1} (${i}): no match found, unexpected "${c}"`);
    out.push({ t: 'word', v: m[0], at: i });
    i += m[0].length;
  }
  return out;
}

function parse(src) {
  const toks = tokenize(src);
  let p = 0;
  const peek = (k = 0) => toks[p + k];
  const isWord = (tok, w) => tok && tok.t === 'word' && tok.v === w;
  const fail = (what) => {
    const tok = peek();
    const at = tok ? tok.at : src.length;
    throw new FilterError(`1:${at + 1} (${at}): no match found, expected: ${what}`);
  };
  const selector = () => {
    const tok = peek();
    if (!tok || tok.t !== 'word' || !/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(tok.v)) fail('a selector');
    p++;
    return tok.v.split('.');
  };
  const value = () => {
    const tok = peek();
    if (!tok || (tok.t !== 'str' && tok.t !== 'word')) fail('a value');
    p++;
    return tok.v;
  };
  const match = () => {
    // value in selector | value not in selector
    const a = peek();
    if (a && (a.t === 'str' || a.t === 'word') && (isWord(peek(1), 'in') || (isWord(peek(1), 'not') && isWord(peek(2), 'in')))) {
      const v = value();
      const negate = isWord(peek(), 'not');
      p += negate ? 2 : 1;
      const sel = selector();
      return { op: 'in', negate, sel, v };
    }
    const sel = selector();
    const tok = peek();
    if (tok && tok.t === 'op') { p++; return { op: tok.v === '==' ? 'eq' : 'ne', sel, v: value() }; }
    if (isWord(tok, 'contains')) { p++; return { op: 'contains', negate: false, sel, v: value() }; }
    if (isWord(tok, 'matches')) { p++; return { op: 'matches', negate: false, sel, v: value() }; }
    if (isWord(tok, 'is')) {
      p++;
      const negate = isWord(peek(), 'not');
      if (negate) p++;
      if (!isWord(peek(), 'empty')) fail('"empty"');
      p++;
      return { op: 'empty', negate, sel };
    }
    if (isWord(tok, 'not') && (isWord(peek(1), 'contains') || isWord(peek(1), 'matches'))) {
      const op = peek(1).v;
      p += 2;
      return { op, negate: true, sel, v: value() };
    }
    fail('"==", "!=", "contains", "matches", "is empty", "is not empty", "in" or "not in"');
    return null;
  };
  const unary = () => {
    if (isWord(peek(), 'not') && !isWord(peek(1), 'in')) { p++; return { op: 'not', e: unary() }; }
    if (peek() && peek().t === '(') {
      p++;
      const e = or();
      if (!peek() || peek().t !== ')') fail('")"');
      p++;
      return e;
    }
    return match();
  };
  const and = () => {
    let e = unary();
    while (isWord(peek(), 'and')) { p++; e = { op: 'and', a: e, b: unary() }; }
    return e;
  };
  const or = () => {
    let e = and();
    while (isWord(peek(), 'or')) { p++; e = { op: 'or', a: e, b: and() }; }
    return e;
  };
  if (toks.length === 0) fail('an expression');
  const e = or();
  if (p !== toks.length) fail('"and", "or" or the end of the expression');
  return e;
}

function lookup(obj, sel) {
  let v = obj;
  sel.forEach((part, i) => {
    if (v === null || typeof v !== 'object' || !(part in v)) {
      throw new FilterError(`error finding value in datum: /${sel.join('/')} at part ${i}: couldn't find key: struct field with name "${part}"`);
    }
    v = v[part];
  });
  return v;
}

function same(a, b) {
  if (typeof a === 'number') return String(a) === b;
  if (typeof a === 'boolean') return String(a) === b;
  return a === b;
}

function evaluate(e, obj) {
  switch (e.op) {
    case 'and': return evaluate(e.a, obj) && evaluate(e.b, obj);
    case 'or': return evaluate(e.a, obj) || evaluate(e.b, obj);
    case 'not': return !evaluate(e.e, obj);
    default: break;
  }
  const v = lookup(obj, e.sel);
  let r;
  switch (e.op) {
    case 'eq': return same(v, e.v);
    case 'ne': return !same(v, e.v);
    case 'in':
    case 'contains':
      if (Array.isArray(v)) r = v.some((x) => same(x, e.v));
      else if (typeof v === 'string') r = v.includes(e.v);
      else if (v && typeof v === 'object') r = Object.prototype.hasOwnProperty.call(v, e.v);
      else r = false;
      return e.negate ? !r : r;
    case 'matches':
      r = typeof v === 'string' && new RegExp(e.v).test(v);
      return e.negate ? !r : r;
    case 'empty':
      r = v === null || v === undefined || v === '' || (Array.isArray(v) && v.length === 0) ||
        (typeof v === 'object' && Object.keys(v).length === 0);
      return e.negate ? !r : r;
    default: throw new FilterError(`unknown operator ${e.op}`);
  }
}

// Returns a predicate for `src`, or throws FilterError.
function compile(src) {
  const e = parse(src);
  return (obj) => evaluate(e, obj);
}

module.exports = { compile, FilterError };
