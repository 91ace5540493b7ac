/* Process basics: exit codes, argv, environment, stdio. */
#include "tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* true: exits 0. */
int tool_true(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/*
 * exit N: exits with status N (0-255).  Note that wasmtime's WASI refuses statuses
 * of 126 and above, turning them into a trap; that too is worth testing.
 */
int tool_exit(int argc, char **argv)
{
    char *end;
    long status;

    if (argc != 2)
        return usage("exit", "N");
    status = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || status < 0 || status > 255)
        return usage("exit", "N   (N from 0 to 255)");
    return (int)status;
}

/* args: prints each argv element, argv[0] included, on its own line. */
int tool_args(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        puts(argv[i]);
    return 0;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* env: prints the environment as sorted KEY=VALUE lines. */
int tool_env(int argc, char **argv)
{
    size_t count = 0;
    char **sorted;

    (void)argc;
    (void)argv;
    while (environ[count] != NULL)
        count++;
    if ((sorted = malloc((count + 1) * sizeof *sorted)) == NULL) {
        fputs("env: out of memory\n", stderr);
        return 1;
    }
    memcpy(sorted, environ, count * sizeof *sorted);
    qsort(sorted, count, sizeof *sorted, by_string);
    for (size_t i = 0; i < count; i++)
        puts(sorted[i]);
    free(sorted);
    return 0;
}

/* stderr TEXT: writes TEXT and a newline to stderr. */
int tool_stderr(int argc, char **argv)
{
    if (argc != 2)
        return usage("stderr", "TEXT");
    fprintf(stderr, "%s\n", argv[1]);
    return 0;
}

/* cat: copies stdin to stdout byte for byte (NULs included). */
int tool_cat(int argc, char **argv)
{
    static char buf[65536];
    size_t got;

    (void)argc;
    (void)argv;
    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0)
        fwrite(buf, 1, got, stdout);
    if (ferror(stdin)) {
        fputs("cat: read error\n", stderr);
        return 1;
    }
    return 0;
}
