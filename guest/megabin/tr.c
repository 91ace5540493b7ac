#include "tools.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] = "tr [-d] [-s] SET1 [SET2]";

/* A set expanded into the characters it lists, in order (repeats allowed). */
struct set {
    unsigned char *chars;
    size_t len;
};

static const struct {
    const char *name;
    int (*test)(int);
} classes[] = {
    {"alnum", isalnum}, {"alpha", isalpha}, {"blank", isblank}, {"cntrl", iscntrl},
    {"digit", isdigit}, {"graph", isgraph}, {"lower", islower}, {"print", isprint},
    {"punct", ispunct}, {"space", isspace}, {"upper", isupper}, {"xdigit", isxdigit},
};

/* Reads one character of a set at *P, decoding backslash escapes; advances *P. */
static unsigned char set_char(const char **p)
{
    const char *s = *p;
    unsigned value;

    if (s[0] != '\\' || s[1] == '\0') {
        *p = s + 1;
        return (unsigned char)s[0];
    }
    *p = s + 2;
    switch (s[1]) {
    case 'a':
        return '\a';
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'v':
        return '\v';
    }
    if (s[1] < '0' || s[1] > '7')
        return (unsigned char)s[1];
    /* \NNN: up to three octal digits. */
    value = 0;
    s++;
    for (int i = 0; i < 3 && *s >= '0' && *s <= '7'; i++)
        value = value * 8 + (unsigned)(*s++ - '0');
    *p = s;
    return (unsigned char)value;
}

/*
 * If P starts a character class such as "[:upper:]", returns its index in classes
 * and sets *LEN to its length.  Returns -1 if P does not look like one, -2 if it
 * names no known class (after printing an error).
 */
static int class_at(const char *p, size_t *len)
{
    const char *close = p[0] == '[' && p[1] == ':' ? strstr(p + 2, ":]") : NULL;
    size_t name_len;

    if (close == NULL)
        return -1;
    name_len = (size_t)(close - (p + 2));
    *len = name_len + 4;
    for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++) {
        if (strlen(classes[k].name) == name_len && strncmp(classes[k].name, p + 2, name_len) == 0)
            return (int)k;
    }
    error_msg("invalid character class '%.*s'", (int)name_len, p + 2);
    return -2;
}

/*
 * Expands TEXT: characters, escapes, ranges like a-z and classes like [:upper:]
 * (listed in ascending order, so [:lower:] to [:upper:] converts case).  Prints an
 * error and returns false for a reversed range or an unknown class.
 */
static bool parse_set(const char *text, struct set *set)
{
    /* Nothing in TEXT expands to more than 256 characters per byte of it. */
    set->chars = malloc(strlen(text) * 256 + 1);
    set->len = 0;
    if (set->chars == NULL) {
        error_errno("set");
        return false;
    }
    for (const char *p = text; *p != '\0';) {
        unsigned char first, last;
        const char *range_end;
        size_t class_len;
        int k = class_at(p, &class_len);

        if (k == -2)
            return false;
        if (k >= 0) {
            for (int c = 0; c < 256; c++) {
                if (classes[k].test(c))
                    set->chars[set->len++] = (unsigned char)c;
            }
            p += class_len;
            continue;
        }
        first = set_char(&p);
        /* A '-' between two characters is a range; at either end it is literal. */
        if (p[0] != '-' || p[1] == '\0') {
            set->chars[set->len++] = first;
            continue;
        }
        range_end = p + 1;
        last = set_char(&range_end);
        if (last < first) {
            error_msg("range-endpoints of '%c-%c' are in reverse order", first, last);
            return false;
        }
        for (unsigned c = first; c <= last; c++)
            set->chars[set->len++] = (unsigned char)c;
        p = range_end;
    }
    return true;
}

/*
 * tr [-d] [-s] SET1 [SET2]: copies stdin to stdout translating SET1's characters to
 * SET2's (the last character of SET2 repeats as needed), or with -d deleting them.
 * -s squeezes runs of a character into one: of SET1's characters when it is the only
 * set, of SET2's otherwise (after translating or deleting).
 */
int tr_main(int argc, char **argv)
{
    static unsigned char buf[CHUNK_SIZE];
    bool delete = false, squeeze = false;
    bool in_delete[256] = {false}, in_squeeze[256] = {false};
    unsigned char map[256];
    struct set set1, set2 = {NULL, 0};
    int opt, last = -1, nsets;
    size_t got;

    while ((opt = getopt(argc, argv, ":ds")) != -1) {
        switch (opt) {
        case 'd':
            delete = true;
            break;
        case 's':
            squeeze = true;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    nsets = argc - optind;
    if (nsets == 0)
        return usage_msg(usage, "missing operand");
    if (nsets > 2)
        return usage_msg(usage, "extra operand");
    if (delete && !squeeze && nsets == 2)
        return usage_msg(usage, "only one set may be given when deleting without squeezing");
    if (!delete && !squeeze && nsets == 1)
        return usage_msg(usage, "missing SET2 to translate to");
    if (!parse_set(argv[optind], &set1) || (nsets == 2 && !parse_set(argv[optind + 1], &set2)))
        return 1;

    for (int c = 0; c < 256; c++)
        map[c] = (unsigned char)c;
    if (delete) {
        for (size_t i = 0; i < set1.len; i++)
            in_delete[set1.chars[i]] = true;
    } else if (nsets == 2) {
        if (set2.len == 0) {
            error_msg("SET2 must not be empty when translating");
            return 1;
        }
        /* As in GNU tr, when a character is listed twice the last mapping wins. */
        for (size_t i = 0; i < set1.len; i++)
            map[set1.chars[i]] = set2.chars[i < set2.len ? i : set2.len - 1];
    }
    if (squeeze) {
        const struct set *s = nsets == 2 ? &set2 : &set1;

        for (size_t i = 0; i < s->len; i++)
            in_squeeze[s->chars[i]] = true;
    }

    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0) {
        size_t out = 0;

        for (size_t i = 0; i < got; i++) {
            unsigned char c = buf[i];

            if (in_delete[c])
                continue;
            c = map[c];
            if (in_squeeze[c] && c == last)
                continue;
            last = c;
            buf[out++] = c;
        }
        fwrite(buf, 1, out, stdout);
    }
    free(set1.chars);
    free(set2.chars);
    return close_input(stdin, "-") ? 0 : 1;
}
