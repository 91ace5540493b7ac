#include "tools.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "tail [-n [+]N] [-c [+]N] [FILE...]";

/* What to print: the last N lines or bytes, or with FROM_START those from the Nth on. */
struct amount {
    unsigned long long n;
    bool bytes;
    bool from_start;
};

/* Parses N, -N (the same) or +N (start at the Nth) given to OPTION. */
static bool parse_amount(const char *text, const char *option, bool bytes, struct amount *a)
{
    a->bytes = bytes;
    a->from_start = text[0] == '+';
    return parse_count(text + (text[0] == '+' || text[0] == '-'), option, &a->n);
}

/* Offset where the output starts when it counts from the start: line or byte N, 1-based. */
static size_t start_from(const char *data, size_t len, const struct amount *a)
{
    unsigned long long skip = a->n > 0 ? a->n - 1 : 0;
    size_t pos = 0;

    if (a->bytes)
        return skip < len ? (size_t)skip : len;
    for (; skip > 0 && pos < len; skip--) {
        const char *nl = memchr(data + pos, '\n', len - pos);

        pos = nl == NULL ? len : (size_t)(nl - data) + 1;
    }
    return pos;
}

/*
 * Prints the requested part of STREAM.  The last lines are only known at the end,
 * so the input is read whole (tail is not one of the streaming tools).  A read
 * error is left for close_input to report; running out of memory is reported here.
 * CONTEXT is the struct amount.
 */
static bool tail_stream(FILE *stream, const char *path, void *context)
{
    const struct amount *a = context;
    size_t len, start;
    char *data = read_all(stream, &len);

    if (data == NULL) {
        if (!ferror(stream))
            error_errno(path);
        return false;
    }
    if (a->from_start)
        start = start_from(data, len, a);
    else if (a->bytes)
        start = a->n < len ? len - (size_t)a->n : 0;
    else
        start = last_lines_start(data, len, a->n);
    fwrite(data + start, 1, len - start, stdout);
    free(data);
    return true;
}

/*
 * tail [-n [+]N] [-c [+]N] [FILE...]: the last 10 lines (or N lines, or N bytes)
 * of each file ("-" or none: stdin); +N starts at line or byte N instead.  Headers
 * "==> FILE <==" separate several files, and "tail -N" is accepted, as in GNU tail.
 */
int tail_main(int argc, char **argv)
{
    struct amount a = {10, false, false};
    int opt;

    if (argc > 1 && argv[1][0] == '-' && argv[1][1] >= '0' && argv[1][1] <= '9') {
        if (!parse_count(argv[1] + 1, "-N", &a.n))
            return EXIT_USAGE;
        optind = 2;
    }
    /* As in GNU tail, the last of -n and -c wins. */
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
    return each_input(argc, argv, true, tail_stream, &a);
}
