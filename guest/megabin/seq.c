#include "tools.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "seq [FIRST [STEP]] LAST";

/* An operand, and how GNU seq would print numbers of its precision. */
struct operand {
    double value;
    long long integer;
    bool is_integer; /* plain digits that fit in 64 bits */
    bool exponent;   /* written with an exponent: printed with %g */
    int decimals;    /* digits after the decimal point */
};

static bool parse_operand(const char *text, struct operand *op)
{
    const char *dot = strchr(text, '.');
    char *end;

    errno = 0;
    op->value = strtod(text, &end);
    if (end == text || *end != '\0' || isnan(op->value)) {
        error_msg("invalid floating point argument: '%s'", text);
        return false;
    }
    op->exponent = strpbrk(text, "eE") != NULL;
    op->decimals = dot != NULL && !op->exponent ? (int)strspn(dot + 1, "0123456789") : 0;
    op->is_integer = false;
    if (dot == NULL && !op->exponent) {
        errno = 0;
        op->integer = strtoll(text, &end, 10);
        op->is_integer = *end == '\0' && errno != ERANGE;
    }
    return true;
}

/* Counts with 64-bit integers, so large values stay exact. */
static void seq_integers(long long first, long long step, long long last)
{
    for (long long x = first; step > 0 ? x <= last : x >= last;) {
        printf("%lld\n", x);
        if (__builtin_add_overflow(x, step, &x))
            break;
    }
}

/*
 * Counts in floating point, computing each value as FIRST + i * STEP so errors do
 * not accumulate.  As in GNU seq, a value just past LAST that reads back as LAST
 * once printed is still printed, so rounding does not drop it ("seq 0 0.1 1").
 */
static void seq_reals(double first, double step, double last, const char *format, int decimals)
{
    char text[512], prev[512] = "";

    for (unsigned long long i = 0;; i++) {
        double x = first + (double)i * step;

        snprintf(text, sizeof text, format, decimals, x);
        if (step > 0 ? x > last : x < last) {
            if (strtod(text, NULL) == last && strcmp(text, prev) != 0)
                printf("%s\n", text);
            return;
        }
        printf("%s\n", text);
        memcpy(prev, text, sizeof prev);
    }
}

/*
 * seq [FIRST [STEP]] LAST: prints the numbers from FIRST (default 1) to LAST by STEP
 * (default 1), one per line, with as many decimals as FIRST or STEP has.
 */
int seq_main(int argc, char **argv)
{
    struct operand ops[3], *first = &ops[0], *step = &ops[1], *last = &ops[2];
    int n = argc - 1;

    /* No getopt: a negative number such as -5 is an operand, not an option. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9') && a[1] != '.') {
            error_msg("invalid option '%s'", a);
            fprintf(stderr, "usage: %s\n", usage);
            return EXIT_USAGE;
        }
    }
    if (n < 1)
        return usage_msg(usage, "missing operand");
    if (n > 3)
        return usage_msg(usage, "extra operand");
    *first = (struct operand){1, 1, true, false, 0};
    *step = *first;
    for (int i = 0; i < n; i++) {
        /* The operands fill LAST, then FIRST and LAST, then all three. */
        struct operand *op = n == 1 ? last : n == 2 ? (i == 0 ? first : last) : &ops[i];

        if (!parse_operand(argv[i + 1], op))
            return EXIT_USAGE;
    }
    if (step->value == 0) {
        error_msg("invalid zero increment value: '%s'", argv[2]);
        return EXIT_USAGE;
    }

    if (first->is_integer && step->is_integer && last->is_integer)
        seq_integers(first->integer, step->integer, last->integer);
    else if (first->exponent || step->exponent)
        seq_reals(first->value, step->value, last->value, "%.*g", 6);
    else
        seq_reals(first->value, step->value, last->value, "%.*f",
                  first->decimals > step->decimals ? first->decimals : step->decimals);
    return 0;
}
