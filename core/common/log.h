/* Structured logging shared by C and Lua: key=value (default) or JSON lines on stderr. */
#ifndef AP_LOG_H
#define AP_LOG_H

#include <stddef.h>

typedef enum { AP_LOG_DEBUG = 0, AP_LOG_INFO, AP_LOG_WARN, AP_LOG_ERROR } ap_log_level;

/* One key/value pair. `raw` values (numbers, booleans) are written unquoted in JSON. */
typedef struct {
    const char *key;
    const char *val;
    size_t len;
    int raw;
} ap_log_field;

void ap_log_set_level(ap_log_level level);
ap_log_level ap_log_get_level(void);
void ap_log_set_json(int json);
int ap_log_is_json(void);
int ap_log_enabled(ap_log_level level);
/* Parses "debug", "info", "warn" or "error"; returns 0 on success, -1 otherwise. */
int ap_log_parse_level(const char *name, ap_log_level *out);
const char *ap_log_level_name(ap_log_level level);

/* Writes one line; fields may be NULL when n == 0. Thread-safe (one write per line). */
void ap_log_fields(ap_log_level level, const char *msg, const ap_log_field *fields, size_t n);
/* Convenience: NULL-terminated list of string key, string value pairs. */
void ap_log(ap_log_level level, const char *msg, ...);

#define ap_log_debug(...) ap_log(AP_LOG_DEBUG, __VA_ARGS__)
#define ap_log_info(...)  ap_log(AP_LOG_INFO, __VA_ARGS__)
#define ap_log_warn(...)  ap_log(AP_LOG_WARN, __VA_ARGS__)
#define ap_log_error(...) ap_log(AP_LOG_ERROR, __VA_ARGS__)

#endif
