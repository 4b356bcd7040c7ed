/* URL helpers of the HTTP client (see url.h): request labels and the TLS server-name route,
 * both on curl's URL API so that they read a URL exactly as curl will. */
#include "url.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *ap_http_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (s == NULL) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Parses an http or https URL into `*u`; 0, or -1 with `err` filled. */
static int parse(const char *url, CURLU **u, char **scheme, char *err, size_t errlen)
{
    *scheme = NULL;
    *u = curl_url();
    if (*u == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    CURLUcode uc = curl_url_set(*u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        snprintf(err, errlen, "invalid URL \"%s\": %s", url, curl_url_strerror(uc));
        return -1;
    }
    curl_url_get(*u, CURLUPART_SCHEME, scheme, 0);
    if (*scheme == NULL || (strcmp(*scheme, "http") != 0 && strcmp(*scheme, "https") != 0)) {
        snprintf(err, errlen, "invalid URL \"%s\": only http and https are supported", url);
        return -1;
    }
    return 0;
}

char *ap_http_url_label(const char *method, const char *url, char *err, size_t errlen)
{
    CURLU *u;
    char *scheme, *host = NULL, *port = NULL, *path = NULL, *label = NULL;
    if (parse(url, &u, &scheme, err, errlen) == 0) {
        curl_url_get(u, CURLUPART_HOST, &host, 0);
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        curl_url_get(u, CURLUPART_PATH, &path, 0);
        label = ap_http_fmt("%s %s://%s%s%s%s", method, scheme, host ? host : "", port ? ":" : "",
                            port ? port : "", path ? path : "/");
        if (label == NULL) snprintf(err, errlen, "out of memory");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return label;
}

/* A DNS name or an IPv4 address: what a certificate can name and SNI can carry. */
static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-') return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n;
}

int ap_http_route_server_name(const char *url, const char *server_name, ap_http_route *rt,
                              char *err, size_t errlen)
{
    memset(rt, 0, sizeof *rt);
    CURLU *u;
    char *scheme, *host = NULL, *port = NULL, *explicit_port = NULL;
    int rc = -1;
    if (parse(url, &u, &scheme, err, errlen) != 0) goto done;
    if (strcmp(scheme, "https") != 0) {
        rc = 0;
        goto done;
    }
    if (!valid_name(server_name)) {
        snprintf(err, errlen, "invalid TLS server name \"%s\"", server_name);
        goto done;
    }
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_PORT, &explicit_port, 0);
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    if (host == NULL || port == NULL ||
        curl_url_set(u, CURLUPART_HOST, server_name, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &rt->url, 0) != CURLUE_OK) {
        snprintf(err, errlen, "invalid URL \"%s\": cannot route it to TLS server name \"%s\"", url,
                 server_name);
        goto done;
    }
    /* rt->url came from curl: copy it so that every field is freed the same way */
    char *copy = ap_http_fmt("%s", rt->url);
    curl_free(rt->url);
    rt->url = copy;
    rt->connect_to = ap_http_fmt("%s:%s:%s:%s", server_name, port, host, port);
    rt->host_header = ap_http_fmt("Host: %s%s%s", host, explicit_port ? ":" : "",
                                  explicit_port ? explicit_port : "");
    if (rt->url == NULL || rt->connect_to == NULL || rt->host_header == NULL) {
        snprintf(err, errlen, "out of memory");
        ap_http_route_free(rt);
        goto done;
    }
    rc = 0;
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(explicit_port);
    curl_url_cleanup(u);
    return rc;
}

void ap_http_route_free(ap_http_route *rt)
{
    free(rt->url);
    free(rt->connect_to);
    free(rt->host_header);
    memset(rt, 0, sizeof *rt);
}
