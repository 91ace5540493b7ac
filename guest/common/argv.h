/*
 * A reactor's argv: a reactor has no main to receive it, so its exported functions read it
 * from WASI themselves. Header-only, for the reactors (js, python, reactor), which do not
 * all link common/alloc.c; inline, so a reactor that uses one of them is not warned about
 * the other.
 */
#ifndef MEGAVISOR_GUEST_ARGV_H
#define MEGAVISOR_GUEST_ARGV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

/* The call's arguments, NULL-terminated, their number in *count; NULL when WASI fails or
 * memory runs out. Lives until the instance ends (every call has a fresh one, or a
 * session's call reads it once). */
static inline char **read_argv(size_t *count)
{
    size_t size;
    if (__wasi_args_sizes_get(count, &size) != 0)
        return NULL;
    char **argv = calloc(*count + 1, sizeof *argv);
    char *buf = malloc(size);
    if (argv == NULL || buf == NULL || __wasi_args_get((uint8_t **)argv, (uint8_t *)buf) != 0)
        return NULL;
    return argv;
}

/* A code tool's arguments, `TOOL -c CODE [--input JSON]`: 0 with *code set (and *input,
 * or NULL); 2 after printing the usage of `tool`; 70 when argv cannot be read. */
static inline int read_code_args(const char *tool, const char **code, const char **input)
{
    size_t argc;
    char **argv = read_argv(&argc);
    if (argv == NULL)
        return 70;
    *code = NULL;
    *input = NULL;
    for (size_t i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            *code = argv[++i];
        } else if (strcmp(argv[i], "--input") == 0 && i + 1 < argc) {
            *input = argv[++i];
        } else {
            *code = NULL;
            break;
        }
    }
    if (*code == NULL) {
        fprintf(stderr, "%s: usage: %s -c CODE [--input JSON]\n", tool, tool);
        return 2;
    }
    return 0;
}

#endif
