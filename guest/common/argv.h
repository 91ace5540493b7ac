/*
 * A reactor's argv: a reactor has no main to receive it, so its exported functions read it
 * from WASI themselves. Header-only, for the reactors (js, python, reactor), which do not
 * all link common/alloc.c.
 */
#ifndef MEGAVISOR_GUEST_ARGV_H
#define MEGAVISOR_GUEST_ARGV_H

#include <stdlib.h>
#include <wasi/api.h>

/* The call's arguments, NULL-terminated, their number in *count; NULL when WASI fails or
 * memory runs out. Lives until the instance ends (every call has a fresh one, or a
 * session's call reads it once). */
static char **read_argv(size_t *count)
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

#endif
