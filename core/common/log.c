/* Structured logging: formats one record per call and writes it to stderr in a single write(2).
 * A record is one line, except in text mode, where a multi-line value (a Lua traceback) keeps its
 * first line in place and its other lines follow the record, each indented by a tab. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static ap_log_level current_level = AP_LOG_INFO;
static int json_output = 0;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ap_log_set_level(ap_log_level level)
{
    current_level = level;
}

ap_log_level ap_log_get_level(void)
{
    return current_level;
}

void ap_log_set_json(int json)
{
    json_output = json != 0;
}

int ap_log_is_json(void)
{
    return json_output;
}

int ap_log_enabled(ap_log_level level)
{
    return level >= current_level;
}

int ap_log_parse_level(const char *name, ap_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (ap_log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *ap_log_level_name(ap_log_level level)
{
    return level_names[level <= AP_LOG_ERROR ? level : AP_LOG_ERROR];
}

/* A line buffer that truncates instead of overflowing; long values are cut, never the newline. */
typedef struct {
    char data[8192];
    size_t len;
} line_buf;

static void put(line_buf *b, const char *s, size_t n)
{
    size_t room = sizeof(b->data) - 1 - b->len; /* keep one byte for '\n' */
    if (n > room) n = room;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void puts_(line_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static int needs_quotes(const char *s, size_t n)
{
    if (n == 0) return 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return 1;
    }
    return 0;
}

/* Escapes for both formats: JSON string escapes are also readable in key=value output. */
static void put_escaped(line_buf *b, const char *s, size_t n)
{
    char tmp[8];
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            put(b, "\\\"", 2);
            break;
        case '\\':
            put(b, "\\\\", 2);
            break;
        case '\n':
            put(b, "\\n", 2);
            break;
        case '\r':
            put(b, "\\r", 2);
            break;
        case '\t':
            put(b, "\\t", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                puts_(b, tmp);
            } else {
                put(b, (const char *)&c, 1);
            }
        }
    }
}

static void put_value(line_buf *b, const char *s, size_t n, int raw)
{
    if (json_output ? raw : !needs_quotes(s, n)) {
        put(b, s, n);
        return;
    }
    put(b, "\"", 1);
    put_escaped(b, s, n);
    put(b, "\"", 1);
}

/* The lines after the first of a multi-line value, for the record's tail: control characters
 * other than tabs are escaped as in a value. */
static void put_tail(line_buf *t, const char *s, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(s, '\n', n);
        size_t len = nl ? (size_t)(nl - s) : n;
        put(t, "\t", 1);
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '\t')
                put(t, "\t", 1);
            else
                put_escaped(t, s + i, 1);
        }
        put(t, "\n", 1);
        if (!nl) break;
        n -= len + 1;
        s = nl + 1;
    }
}

static void put_field(line_buf *b, line_buf *tail, const char *key, const char *val, size_t len,
                      int raw)
{
    const char *nl = json_output ? NULL : memchr(val, '\n', len);
    if (nl) {
        put_tail(tail, nl + 1, len - (size_t)(nl - val) - 1);
        len = (size_t)(nl - val);
    }
    if (json_output) {
        put(b, ",\"", 2);
        put_escaped(b, key, strlen(key));
        put(b, "\":", 2);
    } else {
        put(b, " ", 1);
        puts_(b, key);
        put(b, "=", 1);
    }
    put_value(b, val, len, raw);
}

void ap_log_fields(ap_log_level level, const char *msg, const ap_log_field *fields, size_t n)
{
    if (!ap_log_enabled(level)) return;

    struct timeval tv;
    struct tm tm;
    char ts[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03dZ", (int)(tv.tv_usec / 1000));

    line_buf b, tail;
    b.len = 0;
    tail.len = 0;
    if (json_output) {
        puts_(&b, "{\"time\":\"");
        puts_(&b, ts);
        puts_(&b, "\",\"level\":\"");
        puts_(&b, ap_log_level_name(level));
        puts_(&b, "\",\"msg\":");
        put_value(&b, msg, strlen(msg), 0);
    } else {
        puts_(&b, "time=");
        puts_(&b, ts);
        puts_(&b, " level=");
        puts_(&b, ap_log_level_name(level));
        puts_(&b, " msg=");
        put_value(&b, msg, strlen(msg), 0);
    }
    for (size_t i = 0; i < n; i++) {
        put_field(&b, &tail, fields[i].key, fields[i].val ? fields[i].val : "",
                  fields[i].val ? fields[i].len : 0, fields[i].raw);
    }
    if (json_output) {
        if (b.len > sizeof(b.data) - 2) b.len = sizeof(b.data) - 2;
        b.data[b.len++] = '}';
    }
    b.data[b.len++] = '\n';
    size_t more = tail.len <= sizeof(b.data) - b.len ? tail.len : sizeof(b.data) - b.len;
    memcpy(b.data + b.len, tail.data, more);
    b.len += more;
    if (more > 0 && b.data[b.len - 1] != '\n') b.data[b.len - 1] = '\n';
    ssize_t off = 0;
    while (off < (ssize_t)b.len) {
        ssize_t w = write(STDERR_FILENO, b.data + off, b.len - off);
        if (w <= 0) break;
        off += w;
    }
}

void ap_log(ap_log_level level, const char *msg, ...)
{
    if (!ap_log_enabled(level)) return;
    ap_log_field fields[16];
    size_t n = 0;
    va_list ap;
    va_start(ap, msg);
    const char *key;
    while (n < 16 && (key = va_arg(ap, const char *)) != NULL) {
        const char *val = va_arg(ap, const char *);
        fields[n].key = key;
        fields[n].val = val ? val : "";
        fields[n].len = strlen(fields[n].val);
        fields[n].raw = 0;
        n++;
    }
    va_end(ap);
    ap_log_fields(level, msg, fields, n);
}
