/* Tests core/pprof/prune.c: simplifyFunc, Profile.Prune semantics on crafted stacks (whole
 * locations, inlined frames, the root rule), keep patterns and pattern errors. */
#include <stdlib.h>

#include "helpers.h"

static void test_simplify(void)
{
    static const char *cases[][2] = {
        {"foo(int)", "foo"},
        {".foo", "foo"},
        {"..foo", ".foo"},
        {"", ""},
        {"main.main", "main.main"},
        {"(anonymous namespace)::bar(int)", "(anonymous namespace)::bar"},
        {"A::operator()(int) const", "A::operator()"},
        {"operator()", "operator()"},
        {"x(anonymous namespace)y(z)", "x(anonymous namespace)y"},
        {"f((anonymous namespace))", "f"},
        {".(anonymous namespace)::f()", "(anonymous namespace)::f"},
        {"(anonymous", ""},
        {"pkg.(*T).Method", "pkg."},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t st, n = ap_pprof_simplify_func(cases[i][0], strlen(cases[i][0]), &st);
        int ok = n == strlen(cases[i][1]) && memcmp(cases[i][0] + st, cases[i][1], n) == 0;
        if (!ok) fprintf(stderr, "simplify(%s) = %.*s\n", cases[i][0], (int)n, cases[i][0] + st);
        CHECK(ok);
    }
}

/* Functions: 1 "leaf(int)", 2 "mid", 3 "main.main", 4 "inl"; locations: 1 -> [leaf],
 * 2 -> [inl, mid] (inl inlined into mid), 3 -> [main.main]. One sample 1,2,3. */
static ap_pprof_profile *stack(void)
{
    pb p = {0}, m = {0}, l = {0};
    pb_u64(&m, 1, 1);
    pb_u64(&m, 2, 2);
    pb_msg(&p, 1, &m);
    for (int f = 1; f <= 4; f++) {
        pb_u64(&m, 1, (uint64_t)f);
        pb_u64(&m, 2, (uint64_t)(2 + f));
        pb_msg(&p, 5, &m);
    }
    uint64_t lines[3][2] = {{1, 0}, {4, 2}, {3, 0}};
    for (int i = 0; i < 3; i++) {
        pb_u64(&m, 1, (uint64_t)i + 1);
        for (int j = 0; j < 2 && lines[i][j]; j++) {
            pb_u64(&l, 1, lines[i][j]);
            pb_msg(&m, 4, &l);
        }
        pb_msg(&p, 4, &m);
    }
    uint64_t ids[] = {1, 2, 3};
    pb_packed(&m, 1, ids, 3);
    pb_u64(&m, 2, 1);
    pb_msg(&p, 2, &m);
    const char *strs[] = {"", "samples", "count", "leaf(int)", "mid", "main.main", "inl"};
    for (int i = 0; i < 7; i++) pb_str(&p, 6, strs[i]);
    ap_pprof_profile *r = t_decode(p.b, p.n);
    pb_free(&p);
    return r;
}

/* Prunes a fresh stack with rules; returns the remaining stack as "1,2,3" and the lines of
 * location 2 as a count. */
static void run(const ap_pprof_prune_rule *rules, size_t n, const char *want_stack,
                uint32_t want_loc2_lines)
{
    ap_pprof_profile *p = stack();
    if (!p) return;
    ap_pprof_error err;
    ap_pprof_pruner *pr = ap_pprof_pruner_new(rules, n, &err);
    CHECK(pr != NULL);
    if (pr) CHECK_INT(ap_pprof_prune(p, pr, &err), 0);
    char got[64] = "";
    const ap_pprof_sample *s = &p->samples[0];
    for (uint32_t i = 0; i < s->nloc; i++) {
        char x[8];
        snprintf(x, sizeof x, "%s%u", i ? "," : "", (unsigned)p->sample_locs[s->loc_off + i] + 1);
        strcat(got, x);
    }
    if (strcmp(got, want_stack)) fprintf(stderr, "stack %s, want %s\n", got, want_stack);
    CHECK(strcmp(got, want_stack) == 0);
    CHECK_INT(p->locations[1].nline, want_loc2_lines);
    /* Prune never compacts. */
    CHECK_INT(p->nlocations, 3);
    ap_pprof_pruner_free(pr);
    ap_pprof_profile_free(p);
}

static void test_prune(void)
{
    ap_pprof_prune_rule r;
    r = (ap_pprof_prune_rule){"mid", NULL};
    run(&r, 1, "3", 2); /* the outermost line of location 2 matched: it goes, and below it */
    r = (ap_pprof_prune_rule){"inl", NULL};
    run(&r, 1, "2,3", 1); /* an inner line: the location keeps the frames above it */
    r = (ap_pprof_prune_rule){"leaf", NULL};
    run(&r, 1, "2,3", 2);
    r = (ap_pprof_prune_rule){"^leaf$", NULL}; /* matched against "leaf" (simplified) */
    run(&r, 1, "2,3", 2);
    r = (ap_pprof_prune_rule){"main", NULL}; /* the root: kept until a user frame is seen */
    run(&r, 1, "1,2,3", 2);
    r = (ap_pprof_prune_rule){"i", NULL}; /* unanchored: matches leaf? no; mid, main, inl */
    run(&r, 1, "1,2,3", 2);
    r = (ap_pprof_prune_rule){"mid", "mi"};
    run(&r, 1, "1,2,3", 2);
    r = (ap_pprof_prune_rule){"mid", ""}; /* "" matches everything: nothing dropped */
    run(&r, 1, "1,2,3", 2);
    ap_pprof_prune_rule two[] = {{"inl", NULL}, {"mid", NULL}};
    run(two, 2, "3", 1);
    r = (ap_pprof_prune_rule){"LEAF", NULL};
    run(&r, 1, "1,2,3", 2);
    r = (ap_pprof_prune_rule){"(?i)LEAF", NULL};
    run(&r, 1, "2,3", 2);
}

static void test_patterns(void)
{
    ap_pprof_error err;
    ap_pprof_prune_rule bad[] = {{"ok", NULL}, {"fine", "(unclosed"}};
    CHECK(ap_pprof_pruner_new(bad, 2, &err) == NULL);
    CHECK_ERR(err, AP_PPROF_EPATTERN, "rule 2: keep pattern");
    CHECK_INT(err.input, 1);
    ap_pprof_prune_rule none[] = {{NULL, "x"}};
    CHECK(ap_pprof_pruner_new(none, 1, &err) == NULL);
    CHECK_ERR(err, AP_PPROF_EPATTERN, "no drop pattern");
    /* '$' is the end of the text only, as in Go (not before a final newline). */
    ap_pprof_prune_rule dollar[] = {{"b$", NULL}};
    ap_pprof_pruner *pr = ap_pprof_pruner_new(dollar, 1, &err);
    CHECK(pr != NULL);
    ap_pprof_pruner_free(pr);
    /* Zero rules is a no-op. */
    pr = ap_pprof_pruner_new(NULL, 0, &err);
    CHECK(pr != NULL);
    ap_pprof_profile *p = stack();
    if (p && pr) CHECK_INT(ap_pprof_prune(p, pr, &err), 0);
    ap_pprof_profile_free(p);
    ap_pprof_pruner_free(pr);
}

static void test_newline_name(void)
{
    /* A function named "ab\n": Go's "b$" does not match it, nor does ours. */
    ap_pprof_profile *p = stack();
    if (!p) return;
    uint32_t s = ap_pprof_intern(p, "mi\n", 3);
    p->functions[1].name = s;
    ap_pprof_error err;
    ap_pprof_prune_rule r = {"i$", NULL};
    ap_pprof_pruner *pr = ap_pprof_pruner_new(&r, 1, &err);
    CHECK_INT(ap_pprof_prune(p, pr, &err), 0);
    CHECK_INT(p->samples[0].nloc, 3);
    ap_pprof_pruner_free(pr);
    ap_pprof_profile_free(p);
}

int main(void)
{
    test_simplify();
    test_prune();
    test_patterns();
    test_newline_name();
    return t_done();
}
