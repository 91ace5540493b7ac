#include "tools.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "sha256sum [FILE...]";

/* SHA-256 as specified in FIPS 180-4. */
struct sha256 {
    uint32_t state[8];
    uint64_t length; /* bytes hashed so far */
    unsigned char block[64];
    size_t used; /* bytes waiting in block */
};

static const uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n)
{
    return x >> n | x << (32 - n);
}

static void sha256_init(struct sha256 *h)
{
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

    memcpy(h->state, initial, sizeof initial);
    h->length = 0;
    h->used = 0;
}

/* Mixes one 64-byte block into the state. */
static void sha256_block(struct sha256 *h, const unsigned char *p)
{
    uint32_t w[64], s[8];

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ w[i - 2] >> 10;

        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, h->state, sizeof s);
    for (int i = 0; i < 64; i++) {
        uint32_t s1 = rotr(s[4], 6) ^ rotr(s[4], 11) ^ rotr(s[4], 25);
        uint32_t ch = (s[4] & s[5]) ^ (~s[4] & s[6]);
        uint32_t t1 = s[7] + s1 + ch + round_constants[i] + w[i];
        uint32_t s0 = rotr(s[0], 2) ^ rotr(s[0], 13) ^ rotr(s[0], 22);
        uint32_t maj = (s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]);

        memmove(s + 1, s, 7 * sizeof s[0]);
        s[4] += t1;
        s[0] = t1 + s0 + maj;
    }
    for (int i = 0; i < 8; i++)
        h->state[i] += s[i];
}

static void sha256_update(struct sha256 *h, const unsigned char *data, size_t len)
{
    h->length += len;
    /* Top up a partial block first, then hash whole blocks straight from DATA. */
    if (h->used > 0) {
        size_t take = 64 - h->used < len ? 64 - h->used : len;

        memcpy(h->block + h->used, data, take);
        h->used += take;
        data += take;
        len -= take;
        if (h->used < 64)
            return;
        sha256_block(h, h->block);
        h->used = 0;
    }
    for (; len >= 64; data += 64, len -= 64)
        sha256_block(h, data);
    memcpy(h->block, data, len);
    h->used = len;
}

/* Pads the message (a 1 bit, zeros, the length in bits) and writes the digest. */
static void sha256_final(struct sha256 *h, unsigned char digest[32])
{
    uint64_t bits = h->length * 8;
    unsigned char tail[8];

    h->block[h->used++] = 0x80;
    if (h->used > 56) {
        memset(h->block + h->used, 0, 64 - h->used);
        sha256_block(h, h->block);
        h->used = 0;
    }
    memset(h->block + h->used, 0, 56 - h->used);
    for (int i = 0; i < 8; i++)
        tail[i] = (unsigned char)(bits >> (56 - 8 * i));
    memcpy(h->block + 56, tail, 8);
    sha256_block(h, h->block);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (unsigned char)(h->state[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(h->state[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(h->state[i] >> 8);
        digest[4 * i + 3] = (unsigned char)h->state[i];
    }
}

/* Hashes STREAM chunk by chunk and prints "HEX  NAME". */
static bool sum_stream(FILE *stream, const char *name)
{
    static unsigned char buf[CHUNK_SIZE];
    unsigned char digest[32];
    struct sha256 h;
    size_t got;

    sha256_init(&h);
    while ((got = fread(buf, 1, sizeof buf, stream)) > 0)
        sha256_update(&h, buf, got);
    if (!close_input(stream, name))
        return false;
    sha256_final(&h, digest);
    for (int i = 0; i < 32; i++)
        printf("%02x", digest[i]);
    printf("  %s\n", name);
    return true;
}

/* sha256sum [FILE...]: the SHA-256 of each file ("-" or none: stdin, named "-"). */
int sha256sum_main(int argc, char **argv)
{
    int opt, nfiles, status = 0;
    char **files;

    if ((opt = getopt(argc, argv, ":")) != -1)
        return usage_error(opt, usage);
    files = file_operands(argc, argv, &nfiles);
    for (int i = 0; i < nfiles; i++) {
        FILE *stream = open_input(files[i]);

        if (stream == NULL || !sum_stream(stream, files[i]))
            status = 1;
    }
    return status;
}
