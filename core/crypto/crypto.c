/* OpenSSL-backed hashing, HMAC, base64, random bytes and SHA-256 signing (see crypto.h). */
#include "crypto.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ap_hash {
    EVP_MD_CTX *ctx;
};

static const EVP_MD *md_of(const char *alg)
{
    if (strcmp(alg, "sha256") == 0) return EVP_sha256();
    if (strcmp(alg, "md5") == 0) return EVP_md5();
    if (strcmp(alg, "sha1") == 0) return EVP_sha1();
    if (strcmp(alg, "sha512") == 0) return EVP_sha512();
    return NULL;
}

size_t ap_hash_size(const char *alg)
{
    const EVP_MD *md = md_of(alg);
    return md ? (size_t)EVP_MD_get_size(md) : 0;
}

ap_hash *ap_hash_new(const char *alg)
{
    const EVP_MD *md = md_of(alg);
    if (md == NULL) return NULL;
    ap_hash *h = calloc(1, sizeof *h);
    if (h == NULL) return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, md, NULL) != 1) {
        ap_hash_free(h);
        return NULL;
    }
    return h;
}

int ap_hash_update(ap_hash *h, const void *data, size_t len)
{
    return EVP_DigestUpdate(h->ctx, data, len) == 1 ? 0 : -1;
}

size_t ap_hash_final(ap_hash *h, uint8_t *out)
{
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(h->ctx, out, &n) != 1) return 0;
    return n;
}

void ap_hash_free(ap_hash *h)
{
    if (h == NULL) return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

size_t ap_digest(const char *alg, const void *data, size_t len, uint8_t *out)
{
    const EVP_MD *md = md_of(alg);
    unsigned int n = 0;
    if (md == NULL || EVP_Digest(data, len, out, &n, md, NULL) != 1) return 0;
    return n;
}

size_t ap_digest_file(const char *alg, const char *path, uint8_t *out, uint64_t *size, int *err)
{
    *err = 0;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *err = errno;
        return 0;
    }
    ap_hash *h = ap_hash_new(alg);
    size_t n = 0;
    if (h == NULL) {
        *err = EINVAL;
        goto cleanup;
    }
    static const size_t chunk = 1 << 16;
    uint8_t *buf = malloc(chunk);
    if (buf == NULL) {
        *err = ENOMEM;
        goto cleanup;
    }
    size_t r;
    while ((r = fread(buf, 1, chunk, f)) > 0) {
        ap_hash_update(h, buf, r);
        *size += r;
    }
    if (ferror(f))
        *err = EIO;
    else
        n = ap_hash_final(h, out);
    free(buf);
cleanup:
    ap_hash_free(h);
    fclose(f);
    return n;
}

size_t ap_hmac(const char *alg, const void *key, size_t klen, const void *data, size_t len,
               uint8_t *out)
{
    const EVP_MD *md = md_of(alg);
    unsigned int n = 0;
    if (md == NULL || HMAC(md, key, (int)klen, data, len, out, &n) == NULL) return 0;
    return n;
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t ap_base64_encoded_len(size_t len)
{
    return (len + 2) / 3 * 4;
}

size_t ap_base64_encode(const uint8_t *in, size_t len, int url, char *out)
{
    const char *a = url ? b64_url : b64_std;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < len) out[o++] = a[v >> 6 & 63];
        if (!url) {
            if (i + 1 >= len) out[o++] = '=';
            out[o++] = '=';
        }
    }
    return o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

long ap_base64_decode(const char *in, size_t len, uint8_t *out)
{
    while (len > 0 && in[len - 1] == '=') len--;
    if (len % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

int ap_random(uint8_t *out, size_t len)
{
    return RAND_bytes(out, (int)len) == 1 ? 0 : -1;
}

int ap_equal_ct(const void *a, size_t alen, const void *b, size_t blen)
{
    /* The lengths are public (digests of one size); only the contents must not leak by timing. */
    if (alen != blen) return 0;
    if (alen == 0) return 1;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

static void openssl_error(char *err, size_t err_len, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, err_len, "%s: %s", what, buf);
    ERR_clear_error();
}

int ap_sign_sha256(const char *pem, size_t pem_len, const void *data, size_t len, uint8_t **sig,
                   size_t *sig_len, char *err, size_t err_len)
{
    int rc = -1;
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *ctx = NULL;
    uint8_t *out = NULL;
    *sig = NULL;
    *sig_len = 0;
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio == NULL) {
        openssl_error(err, err_len, "cannot read key");
        return -1;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (key == NULL) {
        openssl_error(err, err_len, "invalid PEM private key");
        goto cleanup;
    }
    ctx = EVP_MD_CTX_new();
    size_t n = 0;
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &n, data, len) != 1) {
        openssl_error(err, err_len, "cannot sign");
        goto cleanup;
    }
    out = malloc(n);
    if (out == NULL) {
        snprintf(err, err_len, "out of memory");
        goto cleanup;
    }
    if (EVP_DigestSign(ctx, out, &n, data, len) != 1) {
        openssl_error(err, err_len, "cannot sign");
        goto cleanup;
    }
    *sig = out;
    *sig_len = n;
    out = NULL;
    rc = 0;
cleanup:
    free(out);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}
