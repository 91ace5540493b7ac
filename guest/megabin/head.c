#include "tools.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "head [-n [-]N] [-c [-]N] [FILE...]";

/* What to print: the first N lines or bytes, or with ALL_BUT all except the last N. */
struct amount {
    unsigned long long n;
    bool bytes;
    bool all_but;
};

/* Parses N, or -N for GNU's "all but the last N", given to OPTION. */
static bool parse_amount(const char *text, const char *option, bool bytes, struct amount *a)
{
    a->bytes = bytes;
    a->all_but = text[0] == '-';
    return parse_count(text + a->all_but, option, &a->n);
}

/* Copies the first N lines of STREAM, reading it in chunks. */
static void head_lines(FILE *stream, unsigned long long n)
{
    static char buf[CHUNK_SIZE];
    size_t got;

    while (n > 0 && (got = fread(buf, 1, sizeof buf, stream)) > 0) {
        const char *p = buf, *end = buf + got;

        while (n > 0 && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));

            if (nl == NULL) {
                p = end;
            } else {
                p = nl + 1;
                n--;
            }
        }
        fwrite(buf, 1, (size_t)(p - buf), stdout);
    }
}

/* Copies the first N bytes of STREAM, reading it in chunks. */
static void head_bytes(FILE *stream, unsigned long long n)
{
    static char buf[CHUNK_SIZE];
    size_t got;

    while (n > 0 && (got = fread(buf, 1, n < sizeof buf ? (size_t)n : sizeof buf, stream)) > 0) {
        fwrite(buf, 1, got, stdout);
        n -= got;
    }
}

/*
 * Prints all of STREAM but its last N lines or bytes.  Where those start is only
 * known at the end of the input, so this reads it whole.  A read error is left for
 * close_input to report; running out of memory is reported here.
 */
static bool head_all_but(FILE *stream, const char *path, const struct amount *a)
{
    size_t len, keep;
    char *data = read_all(stream, &len);

    if (data == NULL) {
        if (!ferror(stream))
            error_errno(path);
        return false;
    }
    if (a->bytes)
        keep = a->n < len ? len - (size_t)a->n : 0;
    else
        keep = last_lines_start(data, len, a->n);
    fwrite(data, 1, keep, stdout);
    free(data);
    return true;
}

/* What head prints of one stream (CONTEXT: the struct amount). */
static bool head_stream(FILE *stream, const char *path, void *context)
{
    const struct amount *a = context;

    if (a->all_but)
        return head_all_but(stream, path, a);
    if (a->bytes)
        head_bytes(stream, a->n);
    else
        head_lines(stream, a->n);
    return true;
}

/*
 * head [-n [-]N] [-c [-]N] [FILE...]: the first 10 lines (or N lines, or N bytes)
 * of each file ("-" or none: stdin), with GNU's "==> FILE <==" headers when there
 * are several.  The obsolete form "head -N" is accepted too, as it is still widely
 * typed.
 */
int head_main(int argc, char **argv)
{
    struct amount a = {10, false, false};
    int opt;

    if (argc > 1 && argv[1][0] == '-' && argv[1][1] >= '0' && argv[1][1] <= '9') {
        if (!parse_count(argv[1] + 1, "-N", &a.n))
            return EXIT_USAGE;
        optind = 2;
    }
    /* As in GNU head, the last of -n and -c wins. */
    while ((opt = getopt(argc, argv, ":n:c:")) != -1) {
        switch (opt) {
        case 'n':
        case 'c':
            if (!parse_amount(optarg, opt == 'n' ? "-n" : "-c", opt == 'c', &a))
                return EXIT_USAGE;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    return each_input(argc, argv, true, head_stream, &a);
}
