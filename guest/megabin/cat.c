#include "tools.h"

#include <unistd.h>

static const char usage[] = "cat [FILE...]";

/* Copies STREAM to stdout in chunks, so input of any size streams through (read
 * errors are reported when the stream is closed). */
static bool copy(FILE *stream, const char *path, void *context)
{
    static char buf[CHUNK_SIZE];
    size_t got;

    (void)path;
    (void)context;
    while ((got = fread(buf, 1, sizeof buf, stream)) > 0)
        fwrite(buf, 1, got, stdout);
    return true;
}

/* cat [FILE...]: concatenates the files ("-" or none: stdin) to stdout. */
int cat_main(int argc, char **argv)
{
    int opt;

    /* cat takes no options, but "-x" must not be mistaken for a file name. */
    if ((opt = getopt(argc, argv, ":")) != -1)
        return usage_error(opt, usage);
    return each_input(argc, argv, false, copy, NULL);
}
