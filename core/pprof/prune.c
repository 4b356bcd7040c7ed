/* Profile.Prune(drop, keep) with PCRE2 standing in for Go's regexp: names are simplified with
 * simplifyFunc before an unanchored match, locations lose the frames below the match, samples
 * lose the stack beneath the first matching frame from the root. No compaction, as in Go. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>

#include "internal.h"

typedef struct {
    pcre2_code *drop, *keep;
} rule;

struct ap_pprof_pruner {
    rule *rules;
    size_t n;
};

/* Options chosen to match RE2 on what both accept: UTF-8 subjects (invalid bytes allowed),
 * '$' only at the very end as Go's (?-m)$ is, no auto-callouts. */
#define AP_RE_OPTIONS (PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY)

static pcre2_code *compile(const char *pat, size_t idx, const char *which, ap_pprof_error *err)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, AP_RE_OPTIONS, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        ap_pprof_fail(err, AP_PPROF_EPATTERN, "rule %zu: %s pattern \"%.80s\": %s at offset %zu",
                      idx + 1, which, pat, (const char *)msg, (size_t)off);
        if (err) err->input = (int)idx;
        return NULL;
    }
    /* JIT when available; the interpreter is the fallback, so a failure here is harmless. */
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

ap_pprof_pruner *ap_pprof_pruner_new(const ap_pprof_prune_rule *rules, size_t n,
                                     ap_pprof_error *err)
{
    ap_pprof_error_clear(err);
    ap_pprof_pruner *pr = calloc(1, sizeof *pr);
    if (!pr || (n && !(pr->rules = calloc(n, sizeof *pr->rules)))) {
        free(pr);
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!rules[i].drop) {
            ap_pprof_fail(err, AP_PPROF_EPATTERN, "rule %zu: no drop pattern", i + 1);
            if (err) err->input = (int)i;
            goto fail;
        }
        pr->n = i + 1;
        if (!(pr->rules[i].drop = compile(rules[i].drop, i, "drop", err))) goto fail;
        if (rules[i].keep && !(pr->rules[i].keep = compile(rules[i].keep, i, "keep", err)))
            goto fail;
    }
    pr->n = n;
    return pr;
fail:
    ap_pprof_pruner_free(pr);
    return NULL;
}

void ap_pprof_pruner_free(ap_pprof_pruner *pr)
{
    if (!pr) return;
    for (size_t i = 0; i < pr->n; i++) {
        pcre2_code_free(pr->rules[i].drop);
        pcre2_code_free(pr->rules[i].keep);
    }
    free(pr->rules);
    free(pr);
}

static int starts_with(const char *s, size_t len, const char *lit, size_t n)
{
    return len >= n && memcmp(s, lit, n) == 0;
}

size_t ap_pprof_simplify_func(const char *name, size_t len, size_t *start)
{
    /* strings.TrimPrefix(f, "."), then the first "(" that does not begin one of the reserved
     * names ends the name. bracketRx scans leftmost-first with the alternatives in the order
     * "(anonymous namespace)", "operator()", "(". */
    static const char anon[] = "(anonymous namespace)", op[] = "operator()";
    size_t s = len > 0 && name[0] == '.' ? 1 : 0;
    *start = s;
    const char *f = name + s;
    size_t n = len - s;
    for (size_t i = 0; i < n;) {
        if (starts_with(f + i, n - i, anon, sizeof anon - 1)) {
            i += sizeof anon - 1;
        } else if (starts_with(f + i, n - i, op, sizeof op - 1)) {
            i += sizeof op - 1;
        } else if (f[i] == '(') {
            return i;
        } else {
            i++;
        }
    }
    return n;
}

static int re_match(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                    ap_pprof_error *err)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    PCRE2_UCHAR msg[120];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return ap_pprof_fail(err, AP_PPROF_EPATTERN, "matching \"%.*s\": %s", (int)(n > 80 ? 80 : n), s,
                         (const char *)msg) *
           2;
}

enum { PRUNE = 1, PRUNE_BENEATH = 2 };

static int prune_one(ap_pprof_profile *p, const rule *r, pcre2_match_data *md, int8_t *fmatch,
                     uint8_t *lflag, ap_pprof_error *err)
{
    /* fmatch: per function, -1 unknown, 0 keep going, 1 "drop and not keep". */
    memset(fmatch, 0xff, p->nfunctions);
    memset(lflag, 0, p->nlocations);
    for (uint32_t li = 0; li < p->nlocations; li++) {
        ap_pprof_location *loc = &p->locations[li];
        int64_t i;
        for (i = (int64_t)loc->nline - 1; i >= 0; i--) {
            uint32_t f = p->lines[loc->line_off + (uint32_t)i].function;
            if (fmatch[f] < 0) {
                const ap_pprof_str *name = &p->strings[p->functions[f].name];
                int hit = 0;
                if (name->len) {
                    size_t st, n = ap_pprof_simplify_func(name->ptr, name->len, &st);
                    int d = re_match(r->drop, md, name->ptr + st, n, err);
                    if (d < 0) return -1;
                    if (d) {
                        int k = r->keep ? re_match(r->keep, md, name->ptr + st, n, err) : 0;
                        if (k < 0) return -1;
                        hit = !k;
                    }
                }
                fmatch[f] = (int8_t)hit;
            }
            if (fmatch[f]) break;
        }
        if (i >= 0) {
            lflag[li] = PRUNE_BENEATH;
            if (i == (int64_t)loc->nline - 1) {
                lflag[li] |= PRUNE; /* the outermost frame matched: the whole location */
            } else {
                loc->line_off += (uint32_t)i + 1;
                loc->nline -= (uint32_t)i + 1;
            }
        }
    }
    for (uint32_t si = 0; si < p->nsamples; si++) {
        ap_pprof_sample *s = &p->samples[si];
        const uint32_t *locs = ap_pprof_sample_locs(p, s);
        /* From the root towards the leaf; frames before the first user frame are kept so
         * that a matching root does not prune everything. */
        int found_user = 0;
        for (int64_t i = (int64_t)s->nloc - 1; i >= 0; i--) {
            uint8_t fl = lflag[locs[i]];
            if (!fl) {
                found_user = 1;
                continue;
            }
            if (!found_user) continue;
            if (fl & PRUNE) {
                s->loc_off += (uint32_t)i + 1;
                s->nloc -= (uint32_t)i + 1;
            } else {
                s->loc_off += (uint32_t)i;
                s->nloc -= (uint32_t)i;
            }
            break;
        }
    }
    return 0;
}

int ap_pprof_prune(ap_pprof_profile *p, const ap_pprof_pruner *pr, ap_pprof_error *err)
{
    if (!pr || pr->n == 0) return 0;
    int rc = -1;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int8_t *fmatch = malloc(p->nfunctions ? p->nfunctions : 1);
    uint8_t *lflag = malloc(p->nlocations ? p->nlocations : 1);
    if (!md || !fmatch || !lflag) {
        ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory while pruning");
        goto done;
    }
    for (size_t i = 0; i < pr->n; i++) {
        if (prune_one(p, &pr->rules[i], md, fmatch, lflag, err)) {
            ap_pprof_error_prefix(err, "rule %zu", i + 1);
            goto done;
        }
    }
    rc = 0;
done:
    pcre2_match_data_free(md);
    free(fmatch);
    free(lflag);
    return rc;
}

int ap_pprof_prune_marks(const ap_pprof_profile *p, const ap_pprof_pruner *pr, uint32_t from,
                         uint32_t to, uint64_t *marks, ap_pprof_error *err)
{
    if (pr->n > 64) return ap_pprof_fail(err, AP_PPROF_EINVAL, "more than 64 prune rules");
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return ap_pprof_fail(err, AP_PPROF_ENOMEM, "out of memory while pruning");
    int rc = 0;
    for (uint32_t li = from; li < to && !rc; li++) {
        const ap_pprof_location *loc = &p->locations[li];
        uint64_t m = 0;
        for (uint32_t j = 0; j < loc->nline && !rc; j++) {
            const ap_pprof_str *name =
                &p->strings[p->functions[p->lines[loc->line_off + j].function].name];
            if (!name->len) continue;
            size_t st, n = ap_pprof_simplify_func(name->ptr, name->len, &st);
            for (size_t r = 0; r < pr->n; r++) {
                if (m & (1ull << r)) continue;
                int d = re_match(pr->rules[r].drop, md, name->ptr + st, n, err);
                int k = d > 0 && pr->rules[r].keep
                            ? re_match(pr->rules[r].keep, md, name->ptr + st, n, err)
                            : 0;
                if (d < 0 || k < 0) {
                    rc = -1;
                    break;
                }
                if (d && !k) m |= 1ull << r;
            }
        }
        marks[li] = m;
    }
    pcre2_match_data_free(md);
    return rc;
}

int ap_pprof_prune_would_cut(const ap_pprof_profile *p, const uint64_t *marks, uint32_t s)
{
    const ap_pprof_sample *sm = &p->samples[s];
    return ap_pprof_prune_would_cut_locs(marks, ap_pprof_sample_locs(p, sm), sm->nloc);
}

int ap_pprof_prune_would_cut_locs(const uint64_t *marks, const uint32_t *locs, uint32_t nloc)
{
    uint64_t user = 0; /* rules for which a user frame was seen from the root */
    for (int64_t i = (int64_t)nloc - 1; i >= 0; i--) {
        uint64_t m = marks[locs[i]];
        if (m & user) return 1;
        user |= ~m;
    }
    return 0;
}
