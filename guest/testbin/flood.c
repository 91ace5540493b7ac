/* Output volume, for testing capture caps and tails. */
#include "tools.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_LEN 12 /* strlen("line 000001\n") */

/*
 * flood N: writes exactly N bytes to stdout.  Format, with K = N / 12 and R = N % 12:
 *
 *   - K lines of 12 bytes: "line 000001\n", "line 000002\n", ... (numbers modulo
 *     1000000, so every line is 12 bytes), except that line K reads "last 00000K\n";
 *   - then, if R > 0, a short line of R - 1 dots and "\n".
 *
 * So the tail alone tells where the output ended: flood 100000 ends with
 * "line 008332\nlast 008333\n...\n".
 */
int tool_flood(int argc, char **argv)
{
    static char buf[LINE_LEN * 4096];
    unsigned long long total, full_lines;
    size_t used = 0;
    char *end;

    if (argc != 2)
        return usage("flood", "N");
    errno = 0;
    total = strtoull(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || errno == ERANGE || argv[1][0] == '-')
        return usage("flood", "N   (a byte count)");
    full_lines = total / LINE_LEN;

    for (unsigned long long line = 1; line <= full_lines; line++) {
        /* Room for the NUL that snprintf writes after the 12 bytes. */
        char text[LINE_LEN + 1];

        snprintf(text, sizeof text, "%s %06llu\n", line == full_lines ? "last" : "line",
                 line % 1000000);
        memcpy(buf + used, text, LINE_LEN);
        used += LINE_LEN;
        if (used == sizeof buf) {
            fwrite(buf, 1, used, stdout);
            used = 0;
        }
    }
    fwrite(buf, 1, used, stdout);
    if (total % LINE_LEN > 0) {
        for (unsigned i = 1; i < total % LINE_LEN; i++)
            putchar('.');
        putchar('\n');
    }
    return 0;
}
