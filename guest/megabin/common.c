#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tool_name = "megabin";

void error_msg(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void error_errno(const char *what)
{
    error_msg("%s: %s", what, strerror(errno));
}

int usage_msg(const char *usage, const char *message)
{
    error_msg("%s", message);
    fprintf(stderr, "usage: %s\n", usage);
    return EXIT_USAGE;
}

int usage_error(int getopt_result, const char *usage)
{
    if (getopt_result == ':')
        error_msg("option requires an argument -- '%c'", optopt);
    else
        error_msg("invalid option -- '%c'", optopt);
    fprintf(stderr, "usage: %s\n", usage);
    return EXIT_USAGE;
}

bool parse_count(const char *text, const char *option, unsigned long long *count)
{
    char *end;

    /* strtoull would quietly accept a sign and leading blanks; a count has neither. */
    if (*text < '0' || *text > '9') {
        error_msg("invalid number for %s: '%s'", option, text);
        return false;
    }
    errno = 0;
    *count = strtoull(text, &end, 10);
    if (*end != '\0' || errno == ERANGE) {
        error_msg("invalid number for %s: '%s'", option, text);
        return false;
    }
    return true;
}

char **file_operands(int argc, char **argv, int *count)
{
    static char dash[] = "-";
    static char *stdin_only[] = {dash, NULL};

    if (optind >= argc) {
        *count = 1;
        return stdin_only;
    }
    *count = argc - optind;
    return argv + optind;
}

FILE *open_input(const char *path)
{
    struct stat st;
    FILE *stream;

    if (strcmp(path, "-") == 0)
        return stdin;
    stream = fopen(path, "rb");
    if (stream == NULL) {
        error_errno(path);
        return NULL;
    }
    /* WASI opens a directory like a file, and reading it then fails with a vague
     * EBADF: say what is actually wrong, as GNU tools do. */
    if (fstat(fileno(stream), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(stream);
        errno = EISDIR;
        error_errno(path);
        return NULL;
    }
    return stream;
}

bool close_input(FILE *stream, const char *path)
{
    bool ok = !ferror(stream);

    if (!ok)
        error_errno(path);
    if (stream != stdin)
        fclose(stream);
    return ok;
}

int each_input(int argc, char **argv, bool headers,
               bool (*each)(FILE *stream, const char *path, void *context), void *context)
{
    int nfiles, status = 0;
    char **files = file_operands(argc, argv, &nfiles);

    for (int i = 0; i < nfiles; i++) {
        FILE *stream = open_input(files[i]);

        if (stream == NULL) {
            status = 1;
            continue;
        }
        if (headers && nfiles > 1)
            printf("%s==> %s <==\n", i > 0 ? "\n" : "",
                   stream == stdin ? "standard input" : files[i]);
        if (!each(stream, files[i], context))
            status = 1;
        if (!close_input(stream, files[i]))
            status = 1;
    }
    return status;
}

size_t next_capacity(size_t cap, size_t needed)
{
    /* Room left in each power-of-two block for the allocator's header. */
    const size_t headroom = 64;
    size_t block = 4096;

    while (block - headroom < needed || block - headroom <= cap) {
        if (block > SIZE_MAX / 2)
            return needed; /* let the allocation itself fail */
        block *= 2;
    }
    return block - headroom;
}

char *read_all(FILE *stream, size_t *len)
{
    struct stat st;
    size_t used = 0, cap = 0; /* cap: bytes allocated, one kept for the final NUL */
    char *buf = NULL;

    /* A regular file's size is known: allocate once, with a byte more to see the end. */
    if (fstat(fileno(stream), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (unsigned long long)st.st_size < SIZE_MAX / 2)
        cap = (size_t)st.st_size + 2;
    for (;;) {
        size_t want, got;

        if (buf == NULL || used + 1 == cap) {
            size_t bigger = buf == NULL && cap > 0 ? cap : next_capacity(cap, cap + 1);
            char *grown = realloc(buf, bigger);

            if (grown == NULL) {
                free(buf);
                errno = ENOMEM;
                return NULL;
            }
            buf = grown;
            cap = bigger;
        }
        want = cap - 1 - used;
        got = fread(buf + used, 1, want, stream);
        used += got;
        /* fread only comes back short at the end of the input or on an error. */
        if (got < want) {
            if (ferror(stream)) {
                int saved = errno;

                free(buf);
                errno = saved;
                return NULL;
            }
            break;
        }
    }
    buf[used] = '\0';
    *len = used;
    return buf;
}

bool read_line(FILE *stream, char **buf, size_t *cap, size_t *len)
{
    ssize_t got = getline(buf, cap, stream);

    if (got < 0)
        return false;
    if (got > 0 && (*buf)[got - 1] == '\n')
        (*buf)[--got] = '\0';
    *len = (size_t)got;
    return true;
}

size_t last_lines_start(const char *buf, size_t len, unsigned long long n)
{
    size_t pos = len;

    if (n == 0)
        return len;
    /* A newline at the very end closes the last line rather than starting one more. */
    if (pos > 0 && buf[pos - 1] == '\n')
        pos--;
    for (; pos > 0; pos--) {
        if (buf[pos - 1] == '\n' && --n == 0)
            return pos;
    }
    return 0;
}

void put_line(const char *text, size_t len)
{
    fwrite(text, 1, len, stdout);
    putchar('\n');
}

int finish(int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        error_msg("write error: %s", strerror(errno));
        return 1;
    }
    return status;
}
