/* Hashing, HMAC, base64 and signing over OpenSSL libcrypto, for ETags, AWS SigV4, Azure Shared
 * Key and Google service-account JWTs. Plain C: no Lua here. */
#ifndef AP_CRYPTO_H
#define AP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

typedef struct ap_hash ap_hash;

/* Digest sizes in bytes; 0 for an unknown algorithm ("md5", "sha1", "sha256", "sha512"). */
size_t ap_hash_size(const char *alg);
/* Streaming hash; NULL for an unknown algorithm or out of memory. */
ap_hash *ap_hash_new(const char *alg);
int ap_hash_update(ap_hash *h, const void *data, size_t len);
/* Writes the digest (ap_hash_size bytes) and resets nothing: free after. Returns its length. */
size_t ap_hash_final(ap_hash *h, uint8_t *out);
void ap_hash_free(ap_hash *h);
/* One-shot digest; returns its length or 0 on failure. */
size_t ap_digest(const char *alg, const void *data, size_t len, uint8_t *out);
/* Hashes a whole file; returns the digest length or 0 and sets errno-style *err. */
size_t ap_digest_file(const char *alg, const char *path, uint8_t *out, uint64_t *size, int *err);
/* HMAC; returns the MAC length or 0 on failure. */
size_t ap_hmac(const char *alg, const void *key, size_t klen, const void *data, size_t len,
               uint8_t *out);

/* Base64 (standard alphabet with padding, or URL-safe without). `out` needs
 * ap_base64_encoded_len bytes; returns the length written. */
size_t ap_base64_encoded_len(size_t len);
size_t ap_base64_encode(const uint8_t *in, size_t len, int url, char *out);
/* Decodes either alphabet, padding optional, whitespace not allowed; returns -1 on bad input. */
long ap_base64_decode(const char *in, size_t len, uint8_t *out);

/* Cryptographically secure random bytes; 0 on success. */
int ap_random(uint8_t *out, size_t len);

/* 1 when a and b hold the same bytes, else 0, in time that depends only on the lengths (for
 * comparing secrets such as token digests); different lengths are unequal at once. */
int ap_equal_ct(const void *a, size_t alen, const void *b, size_t blen);

/* Signs SHA-256(data) with a PEM private key: RSA gives PKCS#1 v1.5 (RS256), ECDSA DER. On success
 * returns 0 and a malloc'd signature; on failure -1 and a message in err. */
int ap_sign_sha256(const char *pem, size_t pem_len, const void *data, size_t len, uint8_t **sig,
                   size_t *sig_len, char *err, size_t err_len);

#endif
