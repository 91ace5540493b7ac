#include "tools.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "sort [-r] [-n] [-u] [FILE...]";

struct line {
    const char *text;
    size_t len;
    size_t index; /* position in the input, to keep equal lines in input order */
};

static bool reverse, numeric, unique;

/* A number as GNU sort -n reads it: blanks, an optional '-', digits, '.' and digits. */
struct number {
    bool negative;
    const char *whole, *fraction;
    size_t whole_len, fraction_len;
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Splits the leading number of a line into digits without the zeros that do not count. */
static struct number parse_number(const char *s, size_t len)
{
    struct number n = {false, s, s, 0, 0};
    size_t i = 0;

    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < len && s[i] == '-') {
        n.negative = true;
        i++;
    }
    while (i < len && s[i] == '0')
        i++;
    n.whole = s + i;
    while (i < len && is_digit(s[i]))
        i++;
    n.whole_len = (size_t)(s + i - n.whole);
    if (i < len && s[i] == '.') {
        n.fraction = s + ++i;
        while (i < len && is_digit(s[i]))
            i++;
        n.fraction_len = (size_t)(s + i - n.fraction);
        while (n.fraction_len > 0 && n.fraction[n.fraction_len - 1] == '0')
            n.fraction_len--;
    }
    /* "-0", "-0.0" and text without a number are all zero, which has no sign. */
    if (n.whole_len == 0 && n.fraction_len == 0)
        n.negative = false;
    return n;
}

static int sign(int c)
{
    return (c > 0) - (c < 0);
}

/* Compares two numbers digit by digit, so any length of number is exact. */
static int compare_numbers(const struct number *a, const struct number *b)
{
    size_t common = a->fraction_len < b->fraction_len ? a->fraction_len : b->fraction_len;
    int c;

    if (a->negative != b->negative)
        return a->negative ? -1 : 1;
    if (a->whole_len != b->whole_len)
        c = a->whole_len < b->whole_len ? -1 : 1;
    else if ((c = sign(memcmp(a->whole, b->whole, a->whole_len))) == 0 &&
             (c = sign(memcmp(a->fraction, b->fraction, common))) == 0)
        c = (a->fraction_len > b->fraction_len) - (a->fraction_len < b->fraction_len);
    return a->negative ? -c : c;
}

/* Byte-wise comparison, the C locale's collation order. */
static int compare_bytes(const struct line *a, const struct line *b)
{
    int c = memcmp(a->text, b->text, a->len < b->len ? a->len : b->len);

    return c != 0 ? sign(c) : (a->len > b->len) - (a->len < b->len);
}

/* The sort key comparison: what -u considers equal. */
static int compare_keys(const struct line *a, const struct line *b)
{
    if (numeric) {
        struct number na = parse_number(a->text, a->len), nb = parse_number(b->text, b->len);

        return compare_numbers(&na, &nb);
    }
    return compare_bytes(a, b);
}

static int compare_lines(const void *pa, const void *pb)
{
    const struct line *a = pa, *b = pb;
    int c = compare_keys(a, b);

    /* Like GNU sort, lines with equal numbers fall back to comparing all bytes, except
     * with -u, where they are duplicates and the first one in the input is kept. */
    if (c == 0 && numeric && !unique)
        c = compare_bytes(a, b);
    if (reverse)
        c = -c;
    if (c == 0)
        c = (a->index > b->index) - (a->index < b->index);
    return c;
}

/* Appends the lines of DATA (LEN bytes) to *LINES. */
static bool split_lines(const char *data, size_t len, struct line **lines, size_t *count,
                        size_t *cap)
{
    const char *p = data, *end = data + len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl != NULL ? nl : end;

        if (*count == *cap) {
            size_t bigger = next_capacity(*cap * sizeof **lines, (*cap + 1) * sizeof **lines) /
                            sizeof **lines;
            struct line *grown = realloc(*lines, bigger * sizeof **lines);

            if (grown == NULL)
                return false;
            *lines = grown;
            *cap = bigger;
        }
        (*lines)[*count] = (struct line){p, (size_t)(stop - p), *count};
        ++*count;
        p = nl != NULL ? nl + 1 : end;
    }
    return true;
}

/* sort [-r] [-n] [-u] [FILE...]: sorts the lines of all files ("-" or none: stdin). */
int sort_main(int argc, char **argv)
{
    struct line *lines = NULL;
    size_t count = 0, cap = 0;
    int opt, nfiles;
    char **files;

    while ((opt = getopt(argc, argv, ":rnu")) != -1) {
        switch (opt) {
        case 'r':
            reverse = true;
            break;
        case 'n':
            numeric = true;
            break;
        case 'u':
            unique = true;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    /* Every input is needed before the first line can be printed, so read them all;
     * the buffers stay allocated because the lines point into them. */
    files = file_operands(argc, argv, &nfiles);
    for (int i = 0; i < nfiles; i++) {
        FILE *stream = open_input(files[i]);
        size_t len;
        char *data;

        if (stream == NULL)
            return 2;
        data = read_all(stream, &len);
        if (data == NULL) {
            error_errno(files[i]);
            return 2;
        }
        if (!close_input(stream, files[i]))
            return 2;
        if (!split_lines(data, len, &lines, &count, &cap)) {
            error_errno(files[i]);
            return 2;
        }
    }

    qsort(lines, count, sizeof *lines, compare_lines);
    for (size_t i = 0; i < count; i++) {
        if (unique && i > 0 && compare_keys(&lines[i - 1], &lines[i]) == 0)
            continue;
        put_line(lines[i].text, lines[i].len);
    }
    return 0;
}
