/* The compiler's decisions as the JSON document of GET /api/profile/{app}/decisions and
 * `autopgo inspect --pgo --json`, written on the thread pool byte for byte as autopgo.json writes
 * Go's encoding/json (compact, <>& U+2028 U+2029 escaped, invalid UTF-8 as U+FFFD, shortest
 * round-trip floats), so a 57 MB document never passes through Lua tables. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edges.h"

typedef struct {
    char *b;
    size_t n, cap;
    int oom;
} jbuf;

static void put(jbuf *j, const char *s, size_t len)
{
    if (j->oom || len == 0) return;
    if (j->n + len > j->cap) {
        size_t cap = j->cap ? j->cap : 1 << 16;
        while (cap < j->n + len) cap *= 2;
        char *nb = realloc(j->b, cap);
        if (!nb) {
            j->oom = 1;
            return;
        }
        j->b = nb;
        j->cap = cap;
    }
    memcpy(j->b + j->n, s, len);
    j->n += len;
}

static void puts_(jbuf *j, const char *s)
{
    put(j, s, strlen(s));
}

static void put_int(jbuf *j, long long v)
{
    char t[32];
    put(j, t, (size_t)snprintf(t, sizeof t, "%lld", v));
}

/* autopgo.json's format_number for a float: integral ones as integers, else the shortest %.Ng
 * that reads back equal, with Go's exponent (1e-7, not 1e-07). NaN and infinities as null. */
static void put_num(jbuf *j, double v)
{
    char t[40];
    if (!isfinite(v)) {
        puts_(j, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e21) {
        put_int(j, (long long)v);
        return;
    }
    int digits = 1;
    for (; digits <= 17; digits++) {
        snprintf(t, sizeof t, "%.*g", digits, v);
        if (strtod(t, NULL) == v) break;
    }
    if (digits > 17) snprintf(t, sizeof t, "%.17g", v);
    char *e = strchr(t, 'e');
    if (e && (e[1] == '+' || e[1] == '-')) {
        char *d = e + 2, *p = d;
        while (*p == '0' && p[1]) p++;
        memmove(d, p, strlen(p) + 1);
    }
    puts_(j, t);
}

/* Length of the valid UTF-8 sequence at s (strict: no overlong forms, surrogates or code points
 * past U+10FFFF), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static void put_str(jbuf *j, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    put(j, "\"", 1);
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = s[i];
        const char *esc = NULL;
        char t[8];
        size_t adv = 1;
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            snprintf(t, sizeof t, "\\u%04x", c);
            esc = t;
        } else if (c >= 0x80) {
            adv = utf8_len(s + i, n - i);
            if (adv == 0) {
                esc = "\\ufffd";
                adv = 1;
            } else if (adv == 3 && c == 0xE2 && s[i + 1] == 0x80 &&
                       (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
                esc = s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
            }
        }
        if (esc) {
            put(j, str + i - run, run);
            run = 0;
            puts_(j, esc);
        } else {
            run += adv;
        }
        i += adv;
    }
    put(j, str + n - run, run);
    put(j, "\"", 1);
}

static void key(jbuf *j, const char *k)
{
    put(j, "\"", 1);
    puts_(j, k);
    put(j, "\":", 2);
}

static size_t upto(size_t n, size_t limit)
{
    return limit && limit < n ? limit : n;
}

/* "caller":..,"callee":..,"offset":..,"weight":.. of edge i (no braces) */
static void edge_fields(jbuf *j, const ap_pgo_edges *e, size_t i)
{
    const ap_pgo_edge *x = &e->edges[i];
    key(j, "caller");
    put_str(j, ap_pgo_caller(e, x), x->caller_len);
    put(j, ",", 1);
    key(j, "callee");
    put_str(j, ap_pgo_callee(e, x), x->callee_len);
    put(j, ",", 1);
    key(j, "offset");
    put_int(j, x->offset);
    put(j, ",", 1);
    key(j, "weight");
    put_int(j, x->weight);
}

/* Points of the cumulative-share curve of the hot call sites ("cdf"), the last one always among
 * them. */
enum { CDF_POINTS = 256 };

int ap_pgo_decisions_json(const ap_pgo_edges *e, const ap_pgo_decisions *d, size_t limit,
                          const char *signature, const char *extra, size_t extra_len, uint8_t **out,
                          size_t *len, ap_pprof_error *err)
{
    jbuf j = {0};
    size_t n = e->empty ? 0 : e->n;
    puts_(&j, "{");
    key(&j, "sampleType");
    puts_(&j, e->kind == AP_PGO_CPU_NANOSECONDS ? "\"cpu/nanoseconds\"" : "\"samples/count\"");
    puts_(&j, ",\"totalWeight\":");
    put_int(&j, e->total_weight);
    puts_(&j, ",\"edges\":");
    put_int(&j, (long long)n);
    puts_(&j, ",\"threshold\":");
    put_num(&j, d->threshold);
    puts_(&j, ",\"thresholdFromCDF\":");
    put_num(&j, d->thres_from_cdf);
    puts_(&j, ",\"hotCallSites\":[");
    for (size_t i = 0; i < upto(d->nhot, limit); i++) {
        puts_(&j, i ? ",{" : "{");
        edge_fields(&j, e, i);
        puts_(&j, ",\"cumulative\":");
        put_num(&j, d->cum[i]);
        puts_(&j, "}");
    }
    puts_(&j, "],\"hotFunctions\":[");
    for (size_t i = 0; i < upto(d->nhot_callees, limit); i++) {
        const ap_pgo_edge *x = &e->edges[d->hot_callees[i]];
        if (i) puts_(&j, ",");
        put_str(&j, ap_pgo_callee(e, x), x->callee_len);
    }
    puts_(&j, "],\"devirtualization\":[");
    for (size_t i = 0; i < upto(d->nsites, limit); i++) {
        const ap_pgo_site *s = &d->sites[i];
        const ap_pgo_edge *x = &e->edges[s->edge];
        puts_(&j, i ? ",{\"caller\":" : "{\"caller\":");
        put_str(&j, ap_pgo_caller(e, x), x->caller_len);
        puts_(&j, ",\"offset\":");
        put_int(&j, x->offset);
        puts_(&j, ",\"callee\":");
        put_str(&j, ap_pgo_callee(e, x), x->callee_len);
        puts_(&j, ",\"weight\":");
        put_int(&j, x->weight);
        puts_(&j, ",\"siteWeight\":");
        put_int(&j, s->weight);
        puts_(&j, ",\"callees\":");
        put_int(&j, s->callees);
        puts_(&j, ",\"ties\":");
        put_int(&j, s->ties);
        puts_(&j, "}");
    }
    puts_(&j, "],\"counts\":{\"hotCallSites\":");
    put_int(&j, (long long)d->nhot);
    puts_(&j, ",\"hotFunctions\":");
    put_int(&j, (long long)d->nhot_callees);
    puts_(&j, ",\"devirtualization\":");
    put_int(&j, (long long)d->nsites);
    puts_(&j, "},\"limit\":");
    put_int(&j, (long long)limit);
    puts_(&j, ",\"cdf\":[");
    size_t step = (d->nhot + CDF_POINTS - 1) / CDF_POINTS, at = 0;
    if (step < 1) step = 1;
    for (size_t i = step; i <= d->nhot; i += step) {
        puts_(&j, at++ ? ",[" : "[");
        put_int(&j, (long long)i);
        puts_(&j, ",");
        put_num(&j, d->cum[i - 1]);
        puts_(&j, "]");
    }
    if (d->nhot > 0 && d->nhot % step != 0) {
        puts_(&j, at++ ? ",[" : "[");
        put_int(&j, (long long)d->nhot);
        puts_(&j, ",");
        put_num(&j, d->cum[d->nhot - 1]);
        puts_(&j, "]");
    }
    /* the boundary: the last hot edge and the first cold one (see push_decisions) */
    puts_(&j, "],\"boundary\":{\"lastHot\":");
    if (d->nhot > 0) {
        puts_(&j, "{");
        edge_fields(&j, e, d->nhot - 1);
        puts_(&j, ",\"index\":");
        put_int(&j, (long long)d->nhot);
        puts_(&j, ",\"cumulativeBefore\":");
        put_num(&j, d->nhot > 1 ? d->cum[d->nhot - 2] : 0);
        puts_(&j, ",\"cumulative\":");
        put_num(&j, d->cum[d->nhot - 1]);
        puts_(&j, "}");
    } else {
        puts_(&j, "null");
    }
    puts_(&j, ",\"firstCold\":");
    if (d->nhot < n) {
        puts_(&j, "{");
        edge_fields(&j, e, d->nhot);
        puts_(&j, ",\"index\":");
        put_int(&j, (long long)d->nhot + 1);
        puts_(&j, ",\"cumulative\":");
        put_num(&j, d->cum[d->nhot]);
        puts_(&j, "}");
    } else {
        puts_(&j, "null");
    }
    puts_(&j, "},\"signature\":\"");
    puts_(&j, signature);
    puts_(&j, "\"");
    put(&j, extra, extra_len);
    puts_(&j, "}");
    if (j.oom) {
        free(j.b);
        err->code = AP_PPROF_ENOMEM;
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return -1;
    }
    *out = (uint8_t *)j.b;
    *len = j.n;
    return 0;
}
