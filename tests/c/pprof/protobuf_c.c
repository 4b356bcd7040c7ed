/* Cross-checks the hand-written wire codec against protobuf-c (the project's protobuf library)
 * generated from google/pprof's profile.proto: for every good corpus file, and for our own
 * encoding of it, both decoders must see the same tables, ids, values and strings. */
#include <stdlib.h>

#include "helpers.h"
#include "profile.pb-c.h"

typedef Perftools__Profiles__Profile PB;

static int str_is(const ap_pprof_profile *p, uint32_t i, const PB *q, int64_t j)
{
    if (j < 0 || (size_t)j >= q->n_string_table) return 0;
    const char *s = q->string_table[j];
    return p->strings[i].len == strlen(s) && memcmp(p->strings[i].ptr, s, strlen(s)) == 0;
}

/* Compares our decoded profile with protobuf-c's view of the same protobuf bytes. */
static void compare(const char *name, const ap_pprof_profile *p, const PB *q)
{
    int bad = 0;
#define SAME(c)                                                                                    \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            if (!bad++) fprintf(stderr, "%s: differs: %s\n", name, #c);                            \
        }                                                                                          \
    } while (0)
    SAME(p->nstrings == q->n_string_table);
    for (uint32_t i = 0; i < p->nstrings && i < q->n_string_table; i++) SAME(str_is(p, i, q, i));
    SAME(p->nsample_type == q->n_sample_type);
    for (uint32_t i = 0; i < p->nsample_type && i < q->n_sample_type; i++) {
        SAME(p->sample_type[2 * i] == q->sample_type[i]->type);
        SAME(p->sample_type[2 * i + 1] == q->sample_type[i]->unit);
    }
    SAME(p->nmappings == q->n_mapping);
    for (uint32_t i = 0; i < p->nmappings && i < q->n_mapping; i++) {
        const ap_pprof_mapping *m = &p->mappings[i];
        const Perftools__Profiles__Mapping *n = q->mapping[i];
        SAME(m->id == n->id && m->start == n->memory_start && m->limit == n->memory_limit &&
             m->offset == n->file_offset && m->file == n->filename && m->build_id == n->build_id);
        SAME(!!(m->flags & AP_PPROF_HAS_FUNCTIONS) == n->has_functions &&
             !!(m->flags & AP_PPROF_HAS_FILENAMES) == n->has_filenames &&
             !!(m->flags & AP_PPROF_HAS_LINE_NUMBERS) == n->has_line_numbers &&
             !!(m->flags & AP_PPROF_HAS_INLINE_FRAMES) == n->has_inline_frames);
    }
    SAME(p->nfunctions == q->n_function);
    for (uint32_t i = 0; i < p->nfunctions && i < q->n_function; i++) {
        const ap_pprof_function *f = &p->functions[i];
        const Perftools__Profiles__Function *g = q->function[i];
        SAME(f->id == g->id && f->name == g->name && f->system_name == g->system_name &&
             f->filename == g->filename && f->start_line == g->start_line);
    }
    SAME(p->nlocations == q->n_location);
    for (uint32_t i = 0; i < p->nlocations && i < q->n_location; i++) {
        const ap_pprof_location *l = &p->locations[i];
        const Perftools__Profiles__Location *k = q->location[i];
        uint64_t mid = l->mapping == AP_PPROF_NONE ? 0 : p->mappings[l->mapping].id;
        SAME(l->id == k->id && l->address == k->address && (int)l->is_folded == k->is_folded);
        SAME(mid == k->mapping_id || (l->mapping == AP_PPROF_NONE && k->mapping_id != 0));
        SAME(l->nline == k->n_line);
        for (uint32_t j = 0; j < l->nline && j < k->n_line; j++) {
            const ap_pprof_line *ln = &p->lines[l->line_off + j];
            SAME(p->functions[ln->function].id == k->line[j]->function_id);
            SAME(ln->line == k->line[j]->line);
        }
    }
    SAME(p->nsamples == q->n_sample);
    for (uint32_t i = 0; i < p->nsamples && i < q->n_sample; i++) {
        const ap_pprof_sample *s = &p->samples[i];
        const Perftools__Profiles__Sample *t = q->sample[i];
        SAME(s->nloc == t->n_location_id);
        for (uint32_t j = 0; j < s->nloc && j < t->n_location_id; j++)
            SAME(p->locations[p->sample_locs[s->loc_off + j]].id == t->location_id[j]);
        SAME(p->nsample_type == t->n_value);
        for (uint32_t j = 0; j < p->nsample_type && j < t->n_value; j++)
            SAME(p->values[(size_t)i * p->nsample_type + j] == t->value[j]);
        /* Ours drops labels that Go drops (no str, num or unit). */
        uint32_t k = 0;
        for (size_t j = 0; j < t->n_label; j++) {
            const Perftools__Profiles__Label *lb = t->label[j];
            if (!lb->str && !lb->num && !lb->num_unit) continue;
            if (k >= s->nlabel) {
                SAME(k < s->nlabel);
                break;
            }
            const ap_pprof_label *l = &p->labels[s->label_off + k++];
            SAME(l->key == lb->key);
            if (lb->str)
                SAME(!(l->flags & AP_PPROF_LABEL_NUM) && l->str == lb->str);
            else
                SAME((l->flags & AP_PPROF_LABEL_NUM) && l->num == lb->num &&
                     (lb->num_unit == 0 || l->unit == lb->num_unit));
        }
        SAME(k == s->nlabel);
    }
    SAME(p->drop_frames == q->drop_frames && p->keep_frames == q->keep_frames);
    SAME(p->time_nanos == q->time_nanos && p->duration_nanos == q->duration_nanos);
    SAME(p->period == q->period);
    SAME(q->period_type ? p->period_type[0] == q->period_type->type &&
                              p->period_type[1] == q->period_type->unit
                        : p->period_type[0] == 0 && p->period_type[1] == 0);
    SAME(p->ncomments == q->n_comment);
    for (uint32_t i = 0; i < p->ncomments && i < q->n_comment; i++)
        SAME(p->comments[i] == q->comment[i]);
    SAME(p->default_sample_type == q->default_sample_type);
#undef SAME
    CHECK(bad == 0);
}

static void check_bytes(const char *name, const uint8_t *data, size_t len)
{
    size_t rawlen = len;
    uint8_t *raw = NULL;
    if (len >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        raw = t_gunzip(data, len, &rawlen);
        if (!raw) {
            CHECK(raw != NULL);
            return;
        }
    }
    const uint8_t *bytes = raw ? raw : data;
    PB *q = perftools__profiles__profile__unpack(NULL, rawlen, bytes);
    ap_pprof_profile *p = t_decode(data, len);
    CHECK(q != NULL);
    if (p && q) compare(name, p, q);
    if (q) perftools__profiles__profile__free_unpacked(q, NULL);
    ap_pprof_profile_free(p);
    free(raw);
}

int main(void)
{
    static char names[256][256];
    const char *dirs[] = {".", "edge", "autopgo", "google-pprof/derived"};
    int total = 0;
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs; d++) {
        int n = t_list(dirs[d], names, 256);
        for (int i = 0; i < n; i++) {
            if (strstr(names[i], "README")) continue;
            size_t len;
            uint8_t *b = t_data(names[i], &len);
            if (!b) continue;
            check_bytes(names[i], b, len);
            /* Our encoding of it, read back by both. */
            ap_pprof_profile *p = t_decode(b, len);
            if (p) {
                uint8_t *enc;
                size_t elen;
                ap_pprof_error err;
                ap_pprof_encode_opts raw = {.level = -1, .raw = 1};
                CHECK_INT(ap_pprof_encode(p, &raw, &enc, &elen, &err), 0);
                check_bytes(names[i], enc, elen);
                free(enc);
                ap_pprof_profile_free(p);
            }
            free(b);
            total++;
        }
    }
    CHECK(total >= 30);
    return t_done();
}
