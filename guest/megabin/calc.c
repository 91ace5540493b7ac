#include "tools.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "calc EXPRESSION...";

/*
 * A number: exact 64-bit integer arithmetic while every operand and result is an
 * integer that fits, double precision otherwise.  So 123456789 * 987654321 is exact,
 * while 7 / 2 gives 3.5.
 */
struct value {
    bool is_int;
    long long i;
    double d;
};

struct calc {
    const char *src, *p;
    char error[96]; /* empty while all is well */
};

static struct value integer(long long i)
{
    return (struct value){true, i, (double)i};
}

static struct value real(double d)
{
    return (struct value){false, 0, d};
}

static bool failed(const struct calc *c)
{
    return c->error[0] != '\0';
}

/* Records the first error, prefixed with its column when it is a syntax error. */
static void syntax_error(struct calc *c, const char *what)
{
    if (!failed(c))
        snprintf(c->error, sizeof c->error, "syntax error at column %d: %s",
                 (int)(c->p - c->src) + 1, what);
}

static void math_error(struct calc *c, const char *what)
{
    if (!failed(c))
        snprintf(c->error, sizeof c->error, "%s", what);
}

/* Rejects infinities and NaNs as they appear, naming what went wrong. */
static struct value checked(struct calc *c, double d)
{
    if (isnan(d))
        math_error(c, "result is not a real number");
    else if (isinf(d))
        math_error(c, "result out of range");
    return real(d);
}

static void skip_space(struct calc *c)
{
    while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n')
        c->p++;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* A literal: 42, 3.14, .5, 1e3, 2.5E-3.  Only plain digits make an integer. */
static struct value number(struct calc *c)
{
    const char *begin = c->p;
    bool integral = true;
    char *end;

    while (is_digit(*c->p))
        c->p++;
    if (*c->p == '.') {
        integral = false;
        c->p++;
        while (is_digit(*c->p))
            c->p++;
    }
    if (c->p == begin + 1 && *begin == '.') {
        syntax_error(c, "expected digits around '.'");
        return integer(0);
    }
    if (*c->p == 'e' || *c->p == 'E') {
        const char *exponent = c->p + 1 + (c->p[1] == '+' || c->p[1] == '-');

        if (!is_digit(*exponent)) {
            c->p = exponent;
            syntax_error(c, "expected digits in the exponent");
            return integer(0);
        }
        integral = false;
        for (c->p = exponent; is_digit(*c->p);)
            c->p++;
    }
    if (integral) {
        long long i;

        errno = 0;
        i = strtoll(begin, &end, 10);
        if (errno != ERANGE)
            return integer(i);
    }
    return checked(c, strtod(begin, &end));
}

static struct value expression(struct calc *c);
static struct value unary(struct calc *c);

static struct value primary(struct calc *c)
{
    struct value v;

    skip_space(c);
    if (is_digit(*c->p) || *c->p == '.')
        return number(c);
    if (*c->p != '(') {
        syntax_error(c, *c->p == '\0' ? "unexpected end of expression"
                                      : "expected a number or '('");
        return integer(0);
    }
    c->p++;
    v = expression(c);
    skip_space(c);
    if (failed(c))
        return v;
    if (*c->p != ')')
        syntax_error(c, "expected ')'");
    else
        c->p++;
    return v;
}

/* BASE ^ EXP, exactly by repeated squaring while it fits in 64 bits. */
static struct value power(struct calc *c, struct value base, struct value exp)
{
    if (base.d == 0 && exp.d < 0) {
        math_error(c, "division by zero");
        return integer(0);
    }
    if (base.is_int && exp.is_int && exp.i >= 0) {
        long long result = 1, b = base.i, e = exp.i;
        bool overflow = false;

        while (e > 0 && !overflow) {
            if (e & 1)
                overflow = __builtin_mul_overflow(result, b, &result);
            e >>= 1;
            if (e > 0 && !overflow)
                overflow = __builtin_mul_overflow(b, b, &b);
        }
        if (!overflow)
            return integer(result);
    }
    return checked(c, pow(base.d, exp.d));
}

/* '^' binds tighter than unary minus on its left (-2^2 is -4) and is right-associative. */
static struct value power_expr(struct calc *c)
{
    struct value base = primary(c);

    skip_space(c);
    if (failed(c) || *c->p != '^')
        return base;
    c->p++;
    struct value exp = unary(c);
    return failed(c) ? base : power(c, base, exp);
}

static struct value unary(struct calc *c)
{
    struct value v;

    skip_space(c);
    if (*c->p == '+') {
        c->p++;
        return unary(c);
    }
    if (*c->p != '-')
        return power_expr(c);
    c->p++;
    v = unary(c);
    if (v.is_int && v.i != LLONG_MIN)
        return integer(-v.i);
    return real(-v.d);
}

static struct value multiply(struct calc *c, char op, struct value a, struct value b)
{
    long long r;

    if (op == '*') {
        if (a.is_int && b.is_int && !__builtin_mul_overflow(a.i, b.i, &r))
            return integer(r);
        return checked(c, a.d * b.d);
    }
    if (b.d == 0) {
        math_error(c, op == '/' ? "division by zero" : "modulo by zero");
        return integer(0);
    }
    /* LLONG_MIN / -1 does not fit; it takes the floating-point path. */
    if (a.is_int && b.is_int && !(a.i == LLONG_MIN && b.i == -1)) {
        if (op == '%')
            return integer(a.i % b.i);
        if (a.i % b.i == 0)
            return integer(a.i / b.i);
    }
    return checked(c, op == '%' ? fmod(a.d, b.d) : a.d / b.d);
}

static struct value term(struct calc *c)
{
    struct value v = unary(c);

    for (;;) {
        char op;

        skip_space(c);
        op = *c->p;
        if (failed(c) || (op != '*' && op != '/' && op != '%'))
            return v;
        c->p++;
        struct value rhs = unary(c);
        if (failed(c))
            return v;
        v = multiply(c, op, v, rhs);
    }
}

static struct value expression(struct calc *c)
{
    struct value v = term(c);

    for (;;) {
        long long r;
        char op;

        skip_space(c);
        op = *c->p;
        if (failed(c) || (op != '+' && op != '-'))
            return v;
        c->p++;
        struct value rhs = term(c);
        if (failed(c))
            return v;
        if (v.is_int && rhs.is_int &&
            !(op == '+' ? __builtin_add_overflow(v.i, rhs.i, &r)
                        : __builtin_sub_overflow(v.i, rhs.i, &r)))
            v = integer(r);
        else
            v = checked(c, op == '+' ? v.d + rhs.d : v.d - rhs.d);
    }
}

/*
 * calc EXPRESSION...: evaluates the arguments, joined by spaces, as one arithmetic
 * expression with + - * / % ^ (power, right-associative), parentheses and unary
 * minus.  Integral results print without a decimal point, others with %.15g.
 */
int calc_main(int argc, char **argv)
{
    struct calc c = {0};
    struct value v;
    size_t len = 0;
    char *src;

    if (argc < 2)
        return usage_msg(usage, "no expression given");
    for (int i = 1; i < argc; i++)
        len += strlen(argv[i]) + 1;
    if ((src = malloc(len)) == NULL) {
        error_errno("expression");
        return 1;
    }
    src[0] = '\0';
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            strcat(src, " ");
        strcat(src, argv[i]);
    }

    c.src = c.p = src;
    v = expression(&c);
    skip_space(&c);
    if (!failed(&c) && *c.p != '\0')
        syntax_error(&c, *c.p == ')' ? "unmatched ')'" : "expected an operator");
    if (failed(&c)) {
        error_msg("%s", c.error);
        free(src);
        return 1;
    }
    if (v.is_int)
        printf("%lld\n", v.i);
    else
        printf("%.15g\n", v.d == 0 ? 0.0 : v.d); /* never "-0" */
    free(src);
    return 0;
}
