/*
 * The test megabinary: like the default one, a single program that picks its tool
 * by the basename of argv[0].
 */
#include "tools.h"

#include <stdio.h>
#include <string.h>

/* Exit status of a shell asked for a command it cannot find. */
#define EXIT_NOT_FOUND 125

static const struct {
    const char *name;
    tool_fn *run;
} tools[] = {
    {"alloc", tool_alloc},
    {"args", tool_args},
    {"artifacts", tool_artifacts},
    {"cat", tool_cat},
    {"counter", tool_counter},
    {"env", tool_env},
    {"exit", tool_exit},
    {"flood", tool_flood},
    {"probe", tool_probe},
    {"read", tool_read},
    {"sleep", tool_sleep},
    {"spin", tool_spin},
    {"stderr", tool_stderr},
    {"trap", tool_trap},
    {"true", tool_true},
    {"write", tool_write},
};

int usage(const char *tool, const char *args)
{
    fprintf(stderr, "%s: usage: %s %s\n", tool, tool, args);
    return 2;
}

int main(int argc, char **argv)
{
    const char *name = argc > 0 ? argv[0] : "";
    const char *slash = strrchr(name, '/');

    if (slash != NULL)
        name = slash + 1;
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++) {
        if (strcmp(name, tools[i].name) == 0) {
            int status = tools[i].run(argc, argv);

            /* Report lost output, as a real tool would. */
            if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "%s: write error\n", name);
                return 1;
            }
            return status;
        }
    }
    fprintf(stderr, "testbin: unknown tool '%s'; available:", name);
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++)
        fprintf(stderr, " %s", tools[i].name);
    fputc('\n', stderr);
    return EXIT_NOT_FOUND;
}
