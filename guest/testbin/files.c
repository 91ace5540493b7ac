/* Tools that touch the file system through the mounts the supervisor grants. */
#include "tools.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* read FILE: prints FILE's content. */
int tool_read(int argc, char **argv)
{
    static char buf[65536];
    FILE *f;
    size_t got;

    if (argc != 2)
        return usage("read", "FILE");
    if ((f = fopen(argv[1], "rb")) == NULL) {
        fprintf(stderr, "read: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, got, stdout);
    if (ferror(f)) {
        fprintf(stderr, "read: %s: %s\n", argv[1], strerror(errno));
        fclose(f);
        return 1;
    }
    fclose(f);
    return 0;
}

/* Writes TEXT to PATH, creating or truncating it; false with errno set on failure. */
static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    bool ok;

    if (f == NULL)
        return false;
    ok = fputs(text, f) >= 0;
    /* fclose flushes, so its failure is a failed write too. */
    ok = fclose(f) == 0 && ok;
    return ok;
}

/* write FILE TEXT: creates or truncates FILE and writes TEXT into it. */
int tool_write(int argc, char **argv)
{
    if (argc != 3)
        return usage("write", "FILE TEXT");
    if (!write_file(argv[1], argv[2])) {
        fprintf(stderr, "write: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    return 0;
}

/* The symbolic name of the errno values a sandboxed open can fail with. */
static const char *errno_name(int err)
{
    static char other[32];

    switch (err) {
    case EACCES:
        return "EACCES";
    case EBADF:
        return "EBADF";
    case EINVAL:
        return "EINVAL";
    case EIO:
        return "EIO";
    case EISDIR:
        return "EISDIR";
    case ELOOP:
        return "ELOOP";
    case ENAMETOOLONG:
        return "ENAMETOOLONG";
    case ENOENT:
        return "ENOENT";
    case ENOSYS:
        return "ENOSYS";
    case ENOTCAPABLE:
        return "ENOTCAPABLE";
    case ENOTDIR:
        return "ENOTDIR";
    case EPERM:
        return "EPERM";
    case EROFS:
        return "EROFS";
    case EXDEV:
        return "EXDEV";
    }
    snprintf(other, sizeof other, "errno %d", err);
    return other;
}

/*
 * probe PATH...: tries open(PATH, O_RDONLY) for each path and prints "OK PATH" or
 * "DENIED PATH ERRNO-NAME".  Exits with the number of successful opens (at most 125,
 * the largest status WASI runtimes pass through).
 */
int tool_probe(int argc, char **argv)
{
    int ok = 0;

    if (argc < 2)
        return usage("probe", "PATH...");
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);

        if (fd >= 0) {
            printf("OK %s\n", argv[i]);
            close(fd);
            ok++;
        } else {
            printf("DENIED %s %s\n", argv[i], errno_name(errno));
        }
    }
    return ok < 125 ? ok : 125;
}

/*
 * artifacts: reports artifacts both ways the supervisor collects them: a JSON object
 * as the last line of stdout, and, when the runtime gives an output directory
 * (MEGAVISOR_OUT_DIR) and an execution id, the file OUT_DIR/ID.json.
 */
int tool_artifacts(int argc, char **argv)
{
    const char *out_dir = getenv("MEGAVISOR_OUT_DIR");
    const char *id = getenv("MEGAVISOR_EXECUTION_ID");

    (void)argc;
    (void)argv;
    if (out_dir != NULL && id != NULL) {
        size_t len = strlen(out_dir) + strlen(id) + sizeof "/.json";
        char *path = malloc(len);

        if (path == NULL) {
            fputs("artifacts: out of memory\n", stderr);
            return 1;
        }
        snprintf(path, len, "%s/%s.json", out_dir, id);
        if (!write_file(path, "{\"artifacts\":{\"file\":\"from-out-dir\"}}")) {
            fprintf(stderr, "artifacts: %s: %s\n", path, strerror(errno));
            free(path);
            return 1;
        }
        free(path);
    }
    puts("working");
    puts("{\"artifacts\":{\"report\":\"/out/report.txt\",\"count\":\"2\"}}");
    return 0;
}
