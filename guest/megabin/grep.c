#include "tools.h"

#include <ctype.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "grep [-i] [-v] [-c] [-n] [-l] [-q] [-h | -H] [-E | -F] [-e PATTERN]... [PATTERN] [FILE...]";

/* grep's exit statuses (POSIX): a line was selected, none was, or trouble. */
enum { MATCHED = 0, NO_MATCH = 1, TROUBLE = 2 };

enum syntax { BASIC, EXTENDED, FIXED };

/* One pattern: a compiled regex, or for -F the string itself. */
struct pattern {
    regex_t re;
    const char *text;
    size_t len;
};

/* With neither -h nor -H, names are shown when there are several files. */
enum names { NAMES_IF_SEVERAL, NAMES_NEVER, NAMES_ALWAYS };

static struct options {
    bool ignore_case, invert, count, number, files_with_matches, quiet;
    enum names names;
    bool show_names;
    enum syntax syntax;
} opts;

static struct pattern *patterns;
static size_t npatterns;

/*
 * Adds every newline-separated pattern of LIST (POSIX: a pattern list), compiled.
 * Returns false after reporting a pattern that does not compile.
 */
static bool add_patterns(char *list)
{
    for (char *next = list; next != NULL;) {
        char *text = next, *nl = strchr(text, '\n');
        struct pattern *p;

        if (nl != NULL)
            *nl = '\0';
        next = nl != NULL ? nl + 1 : NULL;

        p = realloc(patterns, (npatterns + 1) * sizeof *patterns);
        if (p == NULL) {
            error_errno("patterns");
            return false;
        }
        patterns = p;
        p = &patterns[npatterns];
        p->text = text;
        p->len = strlen(text);
        if (opts.syntax != FIXED) {
            int flags = REG_NOSUB | (opts.syntax == EXTENDED ? REG_EXTENDED : 0) |
                        (opts.ignore_case ? REG_ICASE : 0);
            int rc = regcomp(&p->re, text, flags);

            if (rc != 0) {
                char msg[128];

                regerror(rc, &p->re, msg, sizeof msg);
                error_msg("invalid regular expression '%s': %s", text, msg);
                return false;
            }
        }
        npatterns++;
    }
    return true;
}

static bool bytes_equal(const char *a, const char *b, size_t len, bool fold)
{
    if (!fold)
        return memcmp(a, b, len) == 0;
    for (size_t i = 0; i < len; i++) {
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    }
    return true;
}

/* Whether -F pattern P occurs in the LEN bytes of LINE (ASCII case folded with -i). */
static bool contains(const char *line, size_t len, const struct pattern *p)
{
    if (p->len > len)
        return false;
    for (size_t i = 0; i + p->len <= len; i++) {
        if (bytes_equal(line + i, p->text, p->len, opts.ignore_case))
            return true;
    }
    return false;
}

/* Whether LINE (NUL-terminated, LEN bytes) matches any pattern, before -v. */
static bool matches(const char *line, size_t len)
{
    for (size_t i = 0; i < npatterns; i++) {
        if (opts.syntax == FIXED ? contains(line, len, &patterns[i])
                                 : regexec(&patterns[i].re, line, 0, NULL, 0) == 0)
            return true;
    }
    return false;
}

/*
 * Searches one input, printing what the options ask for.  Returns how many lines
 * were selected, stopping at the first one when that already decides the output.
 */
static unsigned long long search(FILE *stream, const char *name)
{
    static char *line;
    static size_t cap;
    unsigned long long lineno = 0, selected = 0;
    size_t len;

    while (read_line(stream, &line, &cap, &len)) {
        lineno++;
        if (matches(line, len) == opts.invert)
            continue;
        selected++;
        if (opts.quiet || opts.files_with_matches)
            break;
        if (opts.count)
            continue;
        if (opts.show_names)
            printf("%s:", name);
        if (opts.number)
            printf("%llu:", lineno);
        put_line(line, len);
    }
    return selected;
}

/*
 * grep [-ivcnlqhHEF] [-e PATTERN]... [PATTERN] [FILE...]: prints the lines of the
 * files ("-" or none: stdin) that match, prefixed with the file name when there are
 * several files (-H: always, -h: never).  Exits 0 when a line was selected, 1 when
 * none was, 2 on an error (but 0 with -q once a line matched, as POSIX says).
 */
int grep_main(int argc, char **argv)
{
    char **pattern_lists = calloc((size_t)argc, sizeof *pattern_lists);
    size_t nlists = 0;
    int opt, nfiles, status = NO_MATCH;
    char **files;

    if (pattern_lists == NULL) {
        error_errno("patterns");
        return TROUBLE;
    }
    while ((opt = getopt(argc, argv, ":ivcnlqhHEFe:")) != -1) {
        switch (opt) {
        case 'i':
            opts.ignore_case = true;
            break;
        case 'v':
            opts.invert = true;
            break;
        case 'c':
            opts.count = true;
            break;
        case 'n':
            opts.number = true;
            break;
        case 'l':
            opts.files_with_matches = true;
            break;
        case 'q':
            opts.quiet = true;
            break;
        case 'h':
            opts.names = NAMES_NEVER;
            break;
        case 'H':
            opts.names = NAMES_ALWAYS;
            break;
        case 'E':
            opts.syntax = EXTENDED;
            break;
        case 'F':
            opts.syntax = FIXED;
            break;
        case 'e':
            pattern_lists[nlists++] = optarg;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    /* Without -e, the first operand is the pattern. */
    if (nlists == 0) {
        if (optind == argc)
            return usage_msg(usage, "no pattern given");
        pattern_lists[nlists++] = argv[optind++];
    }
    /* Patterns are compiled only now, when -i, -E and -F are all known. */
    for (size_t i = 0; i < nlists; i++) {
        if (!add_patterns(pattern_lists[i]))
            return TROUBLE;
    }

    opts.show_names = opts.names == NAMES_ALWAYS ||
                      (opts.names == NAMES_IF_SEVERAL && argc - optind > 1);
    files = file_operands(argc, argv, &nfiles);
    for (int i = 0; i < nfiles; i++) {
        FILE *stream = open_input(files[i]);
        const char *name = stream == stdin ? "(standard input)" : files[i];
        unsigned long long selected;

        if (stream == NULL) {
            status = TROUBLE;
            continue;
        }
        selected = search(stream, name);
        if (!close_input(stream, files[i]))
            status = TROUBLE;
        if (selected > 0 && status == NO_MATCH)
            status = MATCHED;
        if (opts.quiet) {
            if (selected > 0)
                return MATCHED;
        } else if (opts.files_with_matches) {
            if (selected > 0)
                printf("%s\n", name);
        } else if (opts.count) {
            if (opts.show_names)
                printf("%s:", name);
            printf("%llu\n", selected);
        }
    }
    return status;
}
