#include "tools.h"

#include <string.h>

/* True for "-n", "-nn", ...: GNU echo accepts the flag repeated within one word. */
static bool is_no_newline_flag(const char *arg)
{
    if (arg[0] != '-' || arg[1] == '\0')
        return false;
    return arg[1 + strspn(arg + 1, "n")] == '\0';
}

/*
 * echo [-n] ARGS...: prints the arguments separated by single spaces.  Only leading
 * arguments can be flags, so "echo a -n" prints "-n" literally, as GNU echo does.
 */
int echo_main(int argc, char **argv)
{
    bool newline = true;
    int i = 1;

    for (; i < argc && is_no_newline_flag(argv[i]); i++)
        newline = false;
    for (int first = i; i < argc; i++) {
        if (i > first)
            putchar(' ');
        fputs(argv[i], stdout);
    }
    if (newline)
        putchar('\n');
    return 0;
}
