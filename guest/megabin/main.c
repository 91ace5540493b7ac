/*
 * The default megabinary: one WebAssembly program holding every tool, busybox-style.
 * The supervisor starts it with argv[0] set to the entry's name, and the basename
 * of argv[0] picks the tool.
 */
#include "common.h"
#include "tools.h"

#include <string.h>

/* Exit status of a shell asked for a command it cannot find. */
#define EXIT_NOT_FOUND 125

static const struct {
    const char *name;
    tool_fn *run;
} tools[] = {
    {"base64", base64_main},
    {"calc", calc_main},
    {"cat", cat_main},
    {"echo", echo_main},
    {"false", false_main},
    {"grep", grep_main},
    {"head", head_main},
    {"jsonfmt", jsonfmt_main},
    {"ls", ls_main},
    {"seq", seq_main},
    {"sha256sum", sha256sum_main},
    {"sort", sort_main},
    {"tail", tail_main},
    {"tr", tr_main},
    {"true", true_main},
    {"uniq", uniq_main},
    {"wc", wc_main},
};

int main(int argc, char **argv)
{
    /* A native path such as /usr/bin/wc names the same tool as plain "wc". */
    const char *name = argc > 0 ? argv[0] : "";
    const char *slash = strrchr(name, '/');

    if (slash != NULL)
        name = slash + 1;
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++) {
        if (strcmp(name, tools[i].name) == 0) {
            tool_name = tools[i].name;
            return finish(tools[i].run(argc, argv));
        }
    }
    fprintf(stderr, "megabin: unknown tool '%s'; available:", name);
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++)
        fprintf(stderr, " %s", tools[i].name);
    fputc('\n', stderr);
    return EXIT_NOT_FOUND;
}
