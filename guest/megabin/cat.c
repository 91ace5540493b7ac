#include "tools.h"

#include <unistd.h>

static const char usage[] = "cat [FILE...]";

/* Copies STREAM to stdout in chunks, so input of any size streams through. */
static void copy(FILE *stream)
{
    static char buf[CHUNK_SIZE];
    size_t got;

    while ((got = fread(buf, 1, sizeof buf, stream)) > 0)
        fwrite(buf, 1, got, stdout);
}

/* cat [FILE...]: concatenates the files ("-" or none: stdin) to stdout. */
int cat_main(int argc, char **argv)
{
    int opt, nfiles, status = 0;
    char **files;

    /* cat takes no options, but "-x" must not be mistaken for a file name. */
    if ((opt = getopt(argc, argv, ":")) != -1)
        return usage_error(opt, usage);
    files = file_operands(argc, argv, &nfiles);
    for (int i = 0; i < nfiles; i++) {
        FILE *stream = open_input(files[i]);

        if (stream == NULL) {
            status = 1;
            continue;
        }
        copy(stream);
        if (!close_input(stream, files[i]))
            status = 1;
    }
    return status;
}
