#include "tools.h"

#include <unistd.h>

static const char usage[] = "base64 [-d] [-w COLS] [FILE]";

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes STREAM, breaking lines after WRAP characters (0: never), like GNU base64. */
static void encode(FILE *stream, unsigned long long wrap)
{
    /* A multiple of 3, so that only the last chunk can need padding. */
    static unsigned char in[3 * 16384];
    unsigned long long column = 0;
    size_t got;

    while ((got = fread(in, 1, sizeof in, stream)) > 0) {
        for (size_t i = 0; i < got; i += 3) {
            unsigned long bits = (unsigned long)in[i] << 16;
            size_t n = got - i < 3 ? got - i : 3;
            char quad[4];

            if (n > 1)
                bits |= (unsigned long)in[i + 1] << 8;
            if (n > 2)
                bits |= in[i + 2];
            quad[0] = alphabet[bits >> 18 & 63];
            quad[1] = alphabet[bits >> 12 & 63];
            quad[2] = n > 1 ? alphabet[bits >> 6 & 63] : '=';
            quad[3] = n > 2 ? alphabet[bits & 63] : '=';
            for (int k = 0; k < 4; k++) {
                putchar(quad[k]);
                if (wrap != 0 && ++column == wrap) {
                    putchar('\n');
                    column = 0;
                }
            }
        }
    }
    /* GNU ends the last line with a newline when wrapping, and adds none with -w 0. */
    if (wrap != 0 && column > 0)
        putchar('\n');
}

/* The 6-bit value of a base64 character, or -1 if it is not one. */
static int sextet(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Writes the bytes encoded by a quantum with N significant characters (2 to 4). */
static void emit(unsigned long bits, int n)
{
    putchar((int)(bits >> 16 & 0xff));
    if (n > 2)
        putchar((int)(bits >> 8 & 0xff));
    if (n > 3)
        putchar((int)(bits & 0xff));
}

/*
 * Decodes STREAM in quanta of four characters, ignoring newlines.  As GNU base64
 * does, it writes out everything decoded up to the first invalid character (or an
 * incomplete last quantum) and then fails.
 */
static bool decode(FILE *stream)
{
    unsigned long bits = 0;
    int have = 0;   /* characters of the current quantum seen so far */
    int padded = 0; /* how many of them were '=' */
    int c;

    while ((c = getc(stream)) != EOF) {
        int v = sextet(c);

        if (c == '\n')
            continue;
        /* '=' may only fill the last one or two places of a quantum. */
        if (c == '=' && (have == 2 || have == 3)) {
            padded++;
            v = 0;
        } else if (v < 0 || padded > 0) {
            break;
        }
        bits = bits << 6 | (unsigned long)v;
        if (++have == 4) {
            emit(bits, 4 - padded);
            bits = 0;
            have = padded = 0;
        }
    }
    if (c == EOF && have == 0)
        return true;
    /* What an incomplete quantum holds is still written out before failing. */
    if (have - padded >= 2)
        emit(bits << 6 * (4 - have), have - padded);
    error_msg("invalid input");
    return false;
}

/* base64 [-d] [-w COLS] [FILE]: encodes FILE ("-" or none: stdin), or decodes it with -d. */
int base64_main(int argc, char **argv)
{
    unsigned long long wrap = 76;
    bool decoding = false, ok;
    const char *path = "-";
    FILE *stream;
    int opt;

    while ((opt = getopt(argc, argv, ":dw:")) != -1) {
        switch (opt) {
        case 'd':
            decoding = true;
            break;
        case 'w':
            if (!parse_count(optarg, "-w", &wrap))
                return EXIT_USAGE;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    if (argc - optind > 1)
        return usage_msg(usage, "extra operand");
    if (optind < argc)
        path = argv[optind];
    if ((stream = open_input(path)) == NULL)
        return 1;
    if (decoding) {
        ok = decode(stream);
    } else {
        encode(stream, wrap);
        ok = true;
    }
    return close_input(stream, path) && ok ? 0 : 1;
}
