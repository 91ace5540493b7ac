#include "tools.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "uniq [-c] [-d] [-u] [FILE]";

static bool show_count, only_repeated, only_unique;

/* Prints one run of COUNT equal adjacent lines, if the options select it. */
static void print_run(const char *text, size_t len, unsigned long long count)
{
    if ((only_repeated && count == 1) || (only_unique && count > 1))
        return;
    if (show_count)
        printf("%7llu ", count);
    put_line(text, len);
}

/*
 * uniq [-c] [-d] [-u] [FILE]: collapses runs of equal adjacent lines of FILE ("-" or
 * none: stdin), streaming.  Unlike GNU uniq there is no OUTPUT operand: the tool
 * writes to stdout only.
 */
int uniq_main(int argc, char **argv)
{
    char *line = NULL, *prev = NULL;
    size_t line_cap = 0, prev_cap = 0, len, prev_len = 0;
    unsigned long long run = 0;
    const char *path = "-";
    FILE *stream;
    int opt;

    while ((opt = getopt(argc, argv, ":cdu")) != -1) {
        switch (opt) {
        case 'c':
            show_count = true;
            break;
        case 'd':
            only_repeated = true;
            break;
        case 'u':
            only_unique = true;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    if (argc - optind > 1)
        return usage_msg(usage, "extra operand (uniq writes to stdout only)");
    if (optind < argc)
        path = argv[optind];
    if ((stream = open_input(path)) == NULL)
        return 1;

    while (read_line(stream, &line, &line_cap, &len)) {
        if (run > 0 && len == prev_len && memcmp(line, prev, len) == 0) {
            run++;
            continue;
        }
        if (run > 0)
            print_run(prev, prev_len, run);
        /* The new line starts the next run: swap buffers rather than copy. */
        char *tmp = prev;
        size_t tmp_cap = prev_cap;
        prev = line;
        prev_cap = line_cap;
        prev_len = len;
        line = tmp;
        line_cap = tmp_cap;
        run = 1;
    }
    if (run > 0)
        print_run(prev, prev_len, run);
    free(line);
    free(prev);
    return close_input(stream, path) ? 0 : 1;
}
