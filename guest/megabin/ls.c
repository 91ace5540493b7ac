#include "tools.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] = "ls [-l] [-a] [PATH...]";

/* GNU ls: 1 when a directory entry cannot be read, 2 when an operand cannot be. */
enum { MINOR_TROUBLE = 1, SERIOUS_TROUBLE = 2 };

static bool long_format, show_all;

/* One name to print, with what -l shows about it. */
struct entry {
    char *name; /* as printed */
    char *path; /* where to find it */
    struct stat st;
    bool have_stat;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char type_char(mode_t mode)
{
    if (S_ISDIR(mode))
        return 'd';
    if (S_ISREG(mode))
        return '-';
    if (S_ISLNK(mode))
        return 'l';
    if (S_ISCHR(mode))
        return 'c';
    if (S_ISBLK(mode))
        return 'b';
    if (S_ISFIFO(mode))
        return 'p';
    if (S_ISSOCK(mode))
        return 's';
    return '?';
}

/* Prints ENTRIES, sorted: names only, or with -l "TYPE SIZE NAME [-> TARGET]". */
static void print_entries(struct entry *entries, size_t count)
{
    int width = 1;

    qsort(entries, count, sizeof *entries, by_name);
    for (size_t i = 0; long_format && i < count; i++) {
        int w = entries[i].have_stat
                    ? snprintf(NULL, 0, "%lld", (long long)entries[i].st.st_size)
                    : 1;

        if (w > width)
            width = w;
    }
    for (size_t i = 0; i < count; i++) {
        const struct entry *e = &entries[i];

        if (!long_format) {
            printf("%s\n", e->name);
            continue;
        }
        if (!e->have_stat) {
            printf("? %*s %s\n", width, "?", e->name);
            continue;
        }
        printf("%c %*lld %s", type_char(e->st.st_mode), width, (long long)e->st.st_size,
               e->name);
        if (S_ISLNK(e->st.st_mode)) {
            char target[4096];
            ssize_t n = readlink(e->path, target, sizeof target - 1);

            if (n >= 0)
                printf(" -> %.*s", (int)n, target);
        }
        putchar('\n');
    }
}

static void free_entries(struct entry *entries, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(entries[i].name);
        free(entries[i].path);
    }
    free(entries);
}

static char *join_path(const char *dir, const char *name)
{
    size_t dlen = strlen(dir);
    char *path = malloc(dlen + strlen(name) + 2);

    if (path != NULL)
        sprintf(path, "%s%s%s", dir, dlen > 0 && dir[dlen - 1] == '/' ? "" : "/", name);
    return path;
}

/*
 * Appends NAME, found at PATH (malloc'd; the entry takes it over), to *ENTRIES.
 * -l needs its type and size, taken without following a symbolic link.
 */
static bool add_entry(struct entry **entries, size_t *count, const char *name, char *path)
{
    struct entry *grown;
    struct entry *e;

    if (path == NULL || (grown = realloc(*entries, (*count + 1) * sizeof **entries)) == NULL) {
        free(path);
        return false;
    }
    *entries = grown;
    e = &grown[*count];
    if ((e->name = strdup(name)) == NULL) {
        free(path);
        return false;
    }
    e->path = path;
    e->have_stat = !long_format || lstat(path, &e->st) == 0;
    ++*count;
    return true;
}

/* Lists directory PATH; returns an exit status. */
static int list_directory(const char *path)
{
    struct entry *entries = NULL;
    size_t count = 0;
    struct dirent *d;
    int status = 0;
    DIR *dir = opendir(path);

    if (dir == NULL) {
        error_msg("cannot open directory '%s': %s", path, strerror(errno));
        return SERIOUS_TROUBLE;
    }
    /* "." and ".." are added by hand: not every WASI host reports them. */
    if (show_all && (!add_entry(&entries, &count, ".", join_path(path, ".")) ||
                     !add_entry(&entries, &count, "..", join_path(path, ".."))))
        status = MINOR_TROUBLE;
    errno = 0;
    while ((d = readdir(dir)) != NULL) {
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
            continue;
        if (d->d_name[0] == '.' && !show_all)
            continue;
        if (!add_entry(&entries, &count, d->d_name, join_path(path, d->d_name))) {
            error_msg("%s: %s", path, strerror(errno));
            status = MINOR_TROUBLE;
            break;
        }
    }
    if (d == NULL && errno != 0) {
        error_msg("reading directory '%s': %s", path, strerror(errno));
        status = MINOR_TROUBLE;
    }
    closedir(dir);
    print_entries(entries, count);
    free_entries(entries, count);
    return status;
}

/*
 * ls [-l] [-a] [PATH...]: lists directories (default ".") in byte order of names.
 * As in GNU ls, operands that are not directories are listed first, then each
 * directory, in name order, under a "PATH:" header when there are several operands.
 */
int ls_main(int argc, char **argv)
{
    static char dot[] = ".";
    static char *current_dir[] = {dot};
    struct entry *files = NULL;
    size_t nfiles = 0;
    int opt, status = 0, noperands;
    char **operands, **dirs;
    size_t ndirs = 0;

    while ((opt = getopt(argc, argv, ":la")) != -1) {
        switch (opt) {
        case 'l':
            long_format = true;
            break;
        case 'a':
            show_all = true;
            break;
        default:
            return usage_error(opt, usage);
        }
    }
    noperands = argc - optind;
    operands = noperands > 0 ? argv + optind : current_dir;
    if (noperands == 0)
        noperands = 1;
    if ((dirs = calloc((size_t)noperands, sizeof *dirs)) == NULL) {
        error_errno("operands");
        return SERIOUS_TROUBLE;
    }

    for (int i = 0; i < noperands; i++) {
        struct stat st;

        if (stat(operands[i], &st) != 0 && lstat(operands[i], &st) != 0) {
            error_msg("cannot access '%s': %s", operands[i], strerror(errno));
            status = SERIOUS_TROUBLE;
        } else if (S_ISDIR(st.st_mode)) {
            dirs[ndirs++] = operands[i];
        } else if (!add_entry(&files, &nfiles, operands[i], strdup(operands[i]))) {
            error_errno(operands[i]);
            status = SERIOUS_TROUBLE;
        }
    }
    print_entries(files, nfiles);
    free_entries(files, nfiles);
    qsort(dirs, ndirs, sizeof *dirs, by_string);
    for (size_t i = 0; i < ndirs; i++) {
        int dir_status;

        if (noperands > 1)
            printf("%s%s:\n", nfiles > 0 || i > 0 ? "\n" : "", dirs[i]);
        dir_status = list_directory(dirs[i]);
        if (dir_status > status)
            status = dir_status;
    }
    free(dirs);
    return status;
}
