/* Tests core/http_client/url.c: request labels, and the route that lets TLS name a host other
 * than the URL's (URL host replaced, CONNECT_TO entry, Host header) for names, IPv4 and IPv6
 * hosts, default and explicit ports, plain http (no route) and bad input. */
#include <stdlib.h>

#include "../test.h"
#include "url.h"

static void check_route(const char *url, const char *name, const char *want_url,
                        const char *want_connect_to, const char *want_host)
{
    ap_http_route rt;
    char err[256] = "";
    CHECK(ap_http_route_server_name(url, name, &rt, err, sizeof err) == 0);
    CHECK_STR(rt.url, want_url);
    CHECK_STR(rt.connect_to, want_connect_to);
    CHECK_STR(rt.host_header, want_host);
    ap_http_route_free(&rt);
}

static void test_route(void)
{
    check_route("https://127.0.0.1:6443/api/v1/pods?watch=true", "api.cluster.internal",
                "https://api.cluster.internal:6443/api/v1/pods?watch=true",
                "api.cluster.internal:6443:127.0.0.1:6443", "Host: 127.0.0.1:6443");
    check_route("https://10.0.0.1/v1/services", "nomad.internal",
                "https://nomad.internal/v1/services", "nomad.internal:443:10.0.0.1:443",
                "Host: 10.0.0.1");
    check_route("https://[::1]:8501/v1/catalog/services", "consul.internal",
                "https://consul.internal:8501/v1/catalog/services",
                "consul.internal:8501:[::1]:8501", "Host: [::1]:8501");

    ap_http_route rt;
    char err[256] = "";
    CHECK(ap_http_route_server_name("http://127.0.0.1:4646/v1/services", "nomad.internal", &rt, err,
                                    sizeof err) == 0);
    CHECK(rt.url == NULL && rt.connect_to == NULL && rt.host_header == NULL);
    ap_http_route_free(&rt);
}

static void test_route_refuses(void)
{
    const char *names[] = {"", "bad name", "a/b", "x:1", "-lead", "[::1]"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        ap_http_route rt;
        char err[256] = "";
        CHECK(ap_http_route_server_name("https://127.0.0.1/", names[i], &rt, err, sizeof err) ==
              -1);
        CHECK(strstr(err, "invalid TLS server name") != NULL);
        CHECK(rt.url == NULL);
    }
    ap_http_route rt;
    char err[256] = "";
    CHECK(ap_http_route_server_name("ftp://127.0.0.1/", "a.b", &rt, err, sizeof err) == -1);
    CHECK(strstr(err, "only http and https") != NULL);
    CHECK(ap_http_route_server_name("https://", "a.b", &rt, err, sizeof err) == -1);
    CHECK(strstr(err, "invalid URL") != NULL);
}

static void test_label(void)
{
    char err[256] = "";
    char *l =
        ap_http_url_label("GET", "https://user:pw@example.com:8443/p/q?secret=1", err, sizeof err);
    CHECK_STR(l, "GET https://example.com:8443/p/q");
    free(l);
    l = ap_http_url_label("PUT", "http://example.com", err, sizeof err);
    CHECK_STR(l, "PUT http://example.com/");
    free(l);
    CHECK(ap_http_url_label("GET", "gopher://x/", err, sizeof err) == NULL);
}

int main(void)
{
    RUN(test_route);
    RUN(test_route_refuses);
    RUN(test_label);
    TEST_MAIN_END();
}
