/* Tests core/crypto/crypto.c: digests and HMAC against published vectors, base64 round trips
 * and rejection of bad input, streaming hashes, file digests and signing. */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "../test.h"
#include "crypto.h"

static void hex(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", in[i]);
    out[2 * n] = 0;
}

static void test_digests(void)
{
    uint8_t d[64];
    char h[129];
    CHECK(ap_digest("sha256", "abc", 3, d) == 32);
    hex(d, 32, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(ap_digest("md5", "", 0, d) == 16);
    hex(d, 16, h);
    CHECK_STR(h, "d41d8cd98f00b204e9800998ecf8427e");
    CHECK(ap_digest("nope", "", 0, d) == 0);
    CHECK(ap_hash_size("sha512") == 64);
}

static void test_stream(void)
{
    uint8_t a[32], b[32];
    ap_hash *h = ap_hash_new("sha256");
    CHECK(h != NULL);
    ap_hash_update(h, "ab", 2);
    ap_hash_update(h, "c", 1);
    CHECK(ap_hash_final(h, a) == 32);
    ap_hash_free(h);
    ap_digest("sha256", "abc", 3, b);
    CHECK(memcmp(a, b, 32) == 0);
    CHECK(ap_hash_new("whirlpool") == NULL);
}

static void test_hmac(void)
{
    uint8_t d[32];
    char h[65];
    /* RFC 4231 test case 2 */
    CHECK(ap_hmac("sha256", "Jefe", 4, "what do ya want for nothing?", 28, d) == 32);
    hex(d, 32, h);
    CHECK_STR(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_base64(void)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[16];
    uint8_t back[16];
    for (int i = 0; i < 7; i++) {
        size_t n = ap_base64_encode((const uint8_t *)in[i], strlen(in[i]), 0, out);
        out[n] = 0;
        CHECK_STR(out, std[i]);
        n = ap_base64_encode((const uint8_t *)in[i], strlen(in[i]), 1, out);
        out[n] = 0;
        CHECK_STR(out, url[i]);
        long m = ap_base64_decode(std[i], strlen(std[i]), back);
        CHECK(m == (long)strlen(in[i]) && memcmp(back, in[i], (size_t)m) == 0);
        m = ap_base64_decode(url[i], strlen(url[i]), back);
        CHECK(m == (long)strlen(in[i]) && memcmp(back, in[i], (size_t)m) == 0);
    }
    CHECK(ap_base64_decode("Zm9v!", 5, back) == -1);
    CHECK(ap_base64_decode("Z", 1, back) == -1);
}

static void test_file(void)
{
    char path[] = "/tmp/ap-crypto-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "abc", 3) == 3);
    close(fd);
    uint8_t d[32], e[32];
    uint64_t size;
    int err;
    CHECK(ap_digest_file("sha256", path, d, &size, &err) == 32);
    CHECK(size == 3);
    ap_digest("sha256", "abc", 3, e);
    CHECK(memcmp(d, e, 32) == 0);
    unlink(path);
    CHECK(ap_digest_file("sha256", path, d, &size, &err) == 0 && err != 0);
}

static void test_sign_rejects_garbage(void)
{
    uint8_t *sig = NULL;
    size_t n = 0;
    char err[300];
    CHECK(ap_sign_sha256("not a key", 9, "x", 1, &sig, &n, err, sizeof err) == -1);
    CHECK(sig == NULL);
    CHECK(strstr(err, "invalid PEM private key") != NULL);
}

static void test_equal_ct(void)
{
    uint8_t a[32], b[32];
    ap_digest("sha256", "token", 5, a);
    memcpy(b, a, 32);
    CHECK(ap_equal_ct(a, 32, b, 32) == 1);
    b[31] ^= 1;
    CHECK(ap_equal_ct(a, 32, b, 32) == 0);
    b[31] ^= 1;
    b[0] ^= 0x80;
    CHECK(ap_equal_ct(a, 32, b, 32) == 0);
    CHECK(ap_equal_ct(a, 32, a, 31) == 0);
    CHECK(ap_equal_ct("", 0, "", 0) == 1);
}

int main(void)
{
    RUN(test_digests);
    RUN(test_stream);
    RUN(test_hmac);
    RUN(test_base64);
    RUN(test_file);
    RUN(test_sign_rejects_garbage);
    RUN(test_equal_ct);
    TEST_MAIN_END();
}
