#include "tools.h"

#include <sys/stat.h>
#include <unistd.h>

static const char usage[] = "wc [-l] [-w] [-c] [FILE...]";

struct counts {
    unsigned long long lines, words, bytes;
};

/* Which counts to print; GNU wc prints them in this order whatever the flag order. */
static bool show_lines, show_words, show_bytes;

static bool is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/*
 * Counts STREAM chunk by chunk.  A word is a maximal run of bytes that are not
 * ASCII white space (POSIX's definition; UTF-8 text counts as it would in a UTF-8
 * locale).
 */
static void count_stream(FILE *stream, struct counts *c)
{
    static unsigned char buf[CHUNK_SIZE];
    bool in_word = false;
    size_t got;

    while ((got = fread(buf, 1, sizeof buf, stream)) > 0) {
        c->bytes += got;
        for (size_t i = 0; i < got; i++) {
            if (buf[i] == '\n')
                c->lines++;
            if (is_space(buf[i])) {
                in_word = false;
            } else if (!in_word) {
                in_word = true;
                c->words++;
            }
        }
    }
}

/*
 * GNU wc's column width: wide enough for the total size of the regular files
 * named, at least 7 when any input is not a regular file (its size is unknown,
 * e.g. stdin, which the supervisor always feeds through a pipe), and 1 when a
 * single count of a single input is printed or the first input cannot be stat'ed.
 */
static int column_width(int nfiles, char **files)
{
    unsigned long long regular_total = 0;
    int width = 1, minimum = 1;
    int selected = show_lines + show_words + show_bytes;

    if (nfiles == 1 && selected == 1)
        return 1;
    for (int i = 0; i < nfiles; i++) {
        struct stat st;

        if (files == NULL || (files[i][0] == '-' && files[i][1] == '\0')) {
            minimum = 7;
        } else if (stat(files[i], &st) != 0) {
            if (i == 0)
                return 1;
        } else if (S_ISREG(st.st_mode)) {
            regular_total += (unsigned long long)st.st_size;
        } else {
            minimum = 7;
        }
    }
    for (; regular_total >= 10; regular_total /= 10)
        width++;
    return width > minimum ? width : minimum;
}

static void print_counts(const struct counts *c, int width, const char *name)
{
    const char *sep = "";

    if (show_lines) {
        printf("%*llu", width, c->lines);
        sep = " ";
    }
    if (show_words) {
        printf("%s%*llu", sep, width, c->words);
        sep = " ";
    }
    if (show_bytes)
        printf("%s%*llu", sep, width, c->bytes);
    if (name != NULL)
        printf(" %s", name);
    putchar('\n');
}

/* wc [-l] [-w] [-c] [FILE...]: newline, word and byte counts, GNU-formatted. */
int wc_main(int argc, char **argv)
{
    struct counts total = {0, 0, 0};
    int opt, status = 0, nfiles, width;

    while ((opt = getopt(argc, argv, ":lwc")) != -1) {
        switch (opt) {
        case 'l':
            show_lines = true;
            break;
        case 'w':
            show_words = true;
            break;
        case 'c':
            show_bytes = true;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    if (!show_lines && !show_words && !show_bytes)
        show_lines = show_words = show_bytes = true;

    nfiles = argc - optind;
    if (nfiles == 0) {
        struct counts c = {0, 0, 0};

        count_stream(stdin, &c);
        if (!close_input(stdin, "-"))
            return 1;
        print_counts(&c, column_width(1, NULL), NULL);
        return 0;
    }

    width = column_width(nfiles, argv + optind);
    for (int i = optind; i < argc; i++) {
        struct counts c = {0, 0, 0};
        FILE *stream = open_input(argv[i]);

        if (stream == NULL) {
            status = 1;
            continue;
        }
        count_stream(stream, &c);
        if (!close_input(stream, argv[i]))
            status = 1;
        print_counts(&c, width, argv[i]);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    if (nfiles > 1)
        print_counts(&total, width, "total");
    return status;
}
