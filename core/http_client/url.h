/* URL helpers of the HTTP client (internal): formatted allocation, the label that names a
 * request in messages, and the route that gives TLS a server name other than the URL's host. */
#ifndef AP_HTTP_CLIENT_URL_H
#define AP_HTTP_CLIENT_URL_H

#include <stddef.h>

/* printf into a new string (NULL when out of memory). */
char *ap_http_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "METHOD scheme://host[:port]/path" (no credentials, no query), or NULL with `err` filled
 * when the URL is not a valid http or https URL. */
char *ap_http_url_label(const char *method, const char *url, char *err, size_t errlen);

/* How to send an https request so that TLS (SNI and certificate verification) uses
 * `server_name` while the connection still goes to the URL's host and port, as Go's
 * tls.Config.ServerName does: the URL's host becomes the name, a CURLOPT_CONNECT_TO entry
 * points the name back at the real address, and a Host header keeps the original authority. */
typedef struct {
    char *url;         /* the URL with its host replaced */
    char *connect_to;  /* "name:port:host:port" */
    char *host_header; /* "Host: host[:port]" */
} ap_http_route;

/* Fills `rt` (all NULL for a plain http URL, where there is no TLS to name). Returns 0, or -1
 * with `err` filled for an invalid name or URL. Free with ap_http_route_free. */
int ap_http_route_server_name(const char *url, const char *server_name, ap_http_route *rt,
                              char *err, size_t errlen);
void ap_http_route_free(ap_http_route *rt);

#endif
