#include "tools.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] = "jsonfmt [--compact] [--indent N] [FILE]";

/* Deeper nesting is refused rather than risk overflowing the guest's stack. */
#define MAX_DEPTH 1000
#define MAX_INDENT 16

/* Growable output: nothing is printed until the whole input has been validated. */
struct output {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory */
};

struct parser {
    const unsigned char *start, *p, *end;
    const unsigned char *error_at; /* where the first error was found */
    const char *error;
    struct output out;
    unsigned indent; /* 0: compact */
};

static void put(struct output *out, const void *data, size_t len)
{
    if (out->failed)
        return;
    if (out->cap - out->len < len) {
        size_t cap = next_capacity(out->cap, out->len + len);
        char *grown;

        if ((grown = realloc(out->data, cap)) == NULL) {
            out->failed = true;
            return;
        }
        out->data = grown;
        out->cap = cap;
    }
    memcpy(out->data + out->len, data, len);
    out->len += len;
}

static void put_char(struct output *out, char c)
{
    put(out, &c, 1);
}

/* In pretty mode, starts a new line indented for nesting level DEPTH. */
static void newline(struct parser *ps, int depth)
{
    static const char spaces[MAX_INDENT + 1] = "                ";

    if (ps->indent == 0)
        return;
    put_char(&ps->out, '\n');
    for (int i = 0; i < depth; i++)
        put(&ps->out, spaces, ps->indent);
}

/* Records the first error (later ones are consequences of it) and returns false. */
static bool fail(struct parser *ps, const unsigned char *at, const char *reason)
{
    if (ps->error == NULL) {
        ps->error = reason;
        ps->error_at = at;
    }
    return false;
}

static void skip_space(struct parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Fails with "unexpected end of input" at the end, or REASON at the current byte. */
static bool fail_here(struct parser *ps, const char *reason)
{
    return fail(ps, ps->p, ps->p == ps->end ? "unexpected end of input" : reason);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the four hex digits of a \u escape whose backslash is at P. */
static bool read_u_escape(struct parser *ps, const unsigned char *p, unsigned *code)
{
    *code = 0;
    if (ps->end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return false;
    for (int i = 2; i < 6; i++) {
        int v = hex_value(p[i]);

        if (v < 0)
            return false;
        *code = *code << 4 | (unsigned)v;
    }
    return true;
}

/*
 * Length of the well-formed UTF-8 sequence at P (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0 if it is not one.
 */
static size_t utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0;
    else if (p[0] == 0xed)
        hi = 0x9f;
    else if (p[0] == 0xf0)
        lo = 0x90;
    else if (p[0] == 0xf4)
        hi = 0x8f;
    if ((size_t)(end - p) < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return len;
}

/* Validates a string starting at its opening quote and copies it as written. */
static bool parse_string(struct parser *ps)
{
    const unsigned char *begin = ps->p++;

    while (ps->p < ps->end && *ps->p != '"') {
        const unsigned char *here = ps->p;

        if (*here < 0x20)
            return fail(ps, here, "unescaped control character in string");
        if (*here >= 0x80) {
            size_t len = utf8_length(here, ps->end);

            if (len == 0)
                return fail(ps, here, "invalid UTF-8 in string");
            ps->p += len;
            continue;
        }
        if (*here != '\\') {
            ps->p++;
            continue;
        }
        if (here + 1 == ps->end)
            return fail(ps, ps->end, "unterminated string");
        if (here[1] != '\0' && strchr("\"\\/bfnrt", here[1]) != NULL) {
            ps->p += 2;
        } else if (here[1] == 'u') {
            unsigned code, low;

            if (!read_u_escape(ps, here, &code))
                return fail(ps, here, "invalid \\u escape: expected 4 hex digits");
            ps->p += 6;
            /* UTF-16 surrogates are only valid as a high-low pair. */
            if (code >= 0xdc00 && code <= 0xdfff)
                return fail(ps, here, "lone low surrogate in \\u escape");
            if (code >= 0xd800 && code <= 0xdbff) {
                if (!read_u_escape(ps, ps->p, &low) || low < 0xdc00 || low > 0xdfff)
                    return fail(ps, here,
                                "high surrogate in \\u escape not followed by a low surrogate");
                ps->p += 6;
            }
        } else {
            return fail(ps, here, "invalid escape sequence in string");
        }
    }
    if (ps->p == ps->end)
        return fail(ps, ps->p, "unterminated string");
    ps->p++;
    put(&ps->out, begin, (size_t)(ps->p - begin));
    return true;
}

static bool is_digit(const struct parser *ps)
{
    return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9';
}

/* Validates a number (RFC 8259 grammar) and copies it as written. */
static bool parse_number(struct parser *ps)
{
    const unsigned char *begin = ps->p;

    if (*ps->p == '-')
        ps->p++;
    if (!is_digit(ps))
        return fail_here(ps, "invalid number: expected a digit");
    if (*ps->p++ == '0' && is_digit(ps))
        return fail_here(ps, "invalid number: leading zero");
    while (is_digit(ps))
        ps->p++;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!is_digit(ps))
            return fail_here(ps, "invalid number: expected a digit after '.'");
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!is_digit(ps))
            return fail_here(ps, "invalid number: expected a digit in the exponent");
        while (is_digit(ps))
            ps->p++;
    }
    put(&ps->out, begin, (size_t)(ps->p - begin));
    return true;
}

static bool parse_literal(struct parser *ps, const char *word)
{
    size_t len = strlen(word);

    if ((size_t)(ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0)
        return fail_here(ps, "invalid literal: expected true, false or null");
    put(&ps->out, word, len);
    ps->p += len;
    return true;
}

static bool parse_value(struct parser *ps, int depth);

/* Parses an object or array (CLOSE is '}' or ']') starting at its opening bracket. */
static bool parse_container(struct parser *ps, int depth, char close)
{
    bool object = close == '}';

    if (depth >= MAX_DEPTH)
        return fail(ps, ps->p, "nesting too deep");
    put_char(&ps->out, (char)*ps->p++);
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == close) {
        put_char(&ps->out, close);
        ps->p++;
        return true;
    }
    for (;;) {
        newline(ps, depth + 1);
        if (object) {
            if (ps->p == ps->end || *ps->p != '"')
                return fail_here(ps, "expected a string as object key");
            if (!parse_string(ps))
                return false;
            skip_space(ps);
            if (ps->p == ps->end || *ps->p != ':')
                return fail_here(ps, "expected ':' after object key");
            ps->p++;
            put(&ps->out, ": ", ps->indent != 0 ? 2 : 1);
            skip_space(ps);
        }
        if (!parse_value(ps, depth + 1))
            return false;
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            put_char(&ps->out, ',');
            skip_space(ps);
            continue;
        }
        if (ps->p < ps->end && *ps->p == close)
            break;
        return fail_here(ps, object ? "expected ',' or '}' after object member"
                                    : "expected ',' or ']' after array element");
    }
    ps->p++;
    newline(ps, depth);
    put_char(&ps->out, close);
    return true;
}

/* Parses the value at the current position (no leading white space). */
static bool parse_value(struct parser *ps, int depth)
{
    if (ps->p == ps->end)
        return fail_here(ps, "expected a value");
    switch (*ps->p) {
    case '{':
        return parse_container(ps, depth, '}');
    case '[':
        return parse_container(ps, depth, ']');
    case '"':
        return parse_string(ps);
    case 't':
        return parse_literal(ps, "true");
    case 'f':
        return parse_literal(ps, "false");
    case 'n':
        return parse_literal(ps, "null");
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return parse_number(ps);
        return fail_here(ps, "expected a value");
    }
}

/* Reports the error with its 1-based line and column (counted in characters). */
static void report(const struct parser *ps)
{
    unsigned long line = 1, column = 1;

    for (const unsigned char *p = ps->start; p < ps->error_at; p++) {
        if (*p == '\n') {
            line++;
            column = 1;
        } else if ((*p & 0xc0) != 0x80) {
            column++;
        }
    }
    error_msg("invalid JSON at line %lu, column %lu: %s", line, column, ps->error);
}

/*
 * jsonfmt [--compact] [--indent N] [FILE]: validates one JSON text (RFC 8259) and
 * prints it indented by 2 spaces (or N; 0 and --compact: no white space at all).
 * Strings and numbers are copied exactly as written.
 */
int jsonfmt_main(int argc, char **argv)
{
    struct parser ps = {0};
    const char *path = NULL;
    unsigned long long indent = 2;
    size_t len;
    FILE *stream;
    char *data;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (strcmp(arg, "--compact") == 0) {
            indent = 0;
        } else if (strcmp(arg, "--indent") == 0 || strncmp(arg, "--indent=", 9) == 0) {
            const char *value = arg[8] == '=' ? arg + 9 : argv[++i];

            if (value == NULL)
                return usage_msg(usage, "option '--indent' requires an argument");
            if (!parse_count(value, "--indent", &indent))
                return EXIT_USAGE;
            if (indent > MAX_INDENT)
                return usage_msg(usage, "--indent must be between 0 and 16");
        } else if (arg[0] == '-' && arg[1] != '\0') {
            error_msg("unrecognized option '%s'", arg);
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        } else if (path != NULL) {
            return usage_msg(usage, "only one FILE can be given");
        } else {
            path = arg;
        }
    }
    if (path == NULL)
        path = "-";
    if ((stream = open_input(path)) == NULL)
        return 1;
    data = read_all(stream, &len);
    if (data == NULL) {
        error_errno(path);
        return 1;
    }
    if (!close_input(stream, path))
        return 1;

    ps.start = ps.p = (const unsigned char *)data;
    ps.end = ps.start + len;
    ps.indent = (unsigned)indent;
    /* RFC 8259 lets a parser ignore a byte order mark. */
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        ps.p += 3;
    skip_space(&ps);
    if (parse_value(&ps, 0)) {
        skip_space(&ps);
        if (ps.p != ps.end)
            fail(&ps, ps.p, "unexpected data after the JSON value");
    }
    if (ps.error != NULL) {
        report(&ps);
        return 1;
    }
    put_char(&ps.out, '\n');
    if (ps.out.failed) {
        error_msg("out of memory");
        return 1;
    }
    fwrite(ps.out.data, 1, ps.out.len, stdout);
    return 0;
}
