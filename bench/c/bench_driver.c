/*
 * The C cases of bench/run, all in one run, one JSON object per case:
 *   - `true` through libdriver, connected to a running supervisor (c/ring/true) and embedded
 *     (c/embedded/true), against posix_spawn + waitpid of /bin/true (c/posix-spawn/true);
 *   - `wc -l` on 4 KiB of stdin the same three ways (c/ring/wc, c/embedded/wc,
 *     c/posix-spawn/wc: the native wc fed through a pipe).
 *
 *   bench_driver SOCKET ITERATIONS SPAWNS
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"

extern char **environ;

/* 4 KiB of lines for the wc cases. */
static char input[4096];

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fail(const char *what)
{
    fprintf(stderr, "bench_driver: %s\n", what);
    exit(1);
}

/* One operation of a case: a tool through a driver, or a spawned process. */
typedef struct {
    driver_t *driver; /* NULL: spawn the native program */
    int wc;           /* `wc -l` on `input` rather than `true` */
} op_t;

static void spawn(const op_t *op)
{
    char *true_argv[] = {"/bin/true", NULL};
    char *wc_argv[] = {"wc", "-l", NULL};
    posix_spawn_file_actions_t actions;
    int pipe_fds[2] = {-1, -1};
    pid_t pid;
    int status;

    posix_spawn_file_actions_init(&actions);
    if (op->wc) {
        if (pipe(pipe_fds) != 0)
            fail("pipe");
        posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], 0);
        posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    }
    const char *path = op->wc ? "/usr/bin/wc" : "/bin/true";
    if (posix_spawn(&pid, path, &actions, NULL, op->wc ? wc_argv : true_argv, environ) != 0)
        fail("posix_spawn");
    posix_spawn_file_actions_destroy(&actions);
    if (op->wc) {
        close(pipe_fds[0]);
        if (write(pipe_fds[1], input, sizeof input) != (ssize_t)sizeof input)
            fail("write to wc");
        close(pipe_fds[1]);
    }
    if (waitpid(pid, &status, 0) != pid || status != 0)
        fail(path);
}

static void call(const op_t *op)
{
    const char *wc_args[] = {"-l"};
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = op->wc ? "wc" : "true";
    if (op->wc) {
        request.argv = wc_args;
        request.argc = 1;
        request.stdin = (const uint8_t *)input;
        request.stdin_len = sizeof input;
    }
    driver_result_t *result = NULL;
    if (driver_run(op->driver, &request, &result) != DRIVER_STATUS_OK)
        fail(driver_last_error());
    if (driver_result_exit_code(result) != 0)
        fail("the tool failed");
    driver_result_free(result);
}

static void run_op(const op_t *op)
{
    if (op->driver == NULL)
        spawn(op);
    else
        call(op);
}

/* Measures `n` operations after n/10 warm-up ones; prints the case's line; returns its p50. */
static double measure(const char *name, const op_t *op, double *samples, int n,
                      const char *peer, double peer_p50)
{
    for (int i = 0; i < n / 10; i++)
        run_op(op);
    double started = now_us();
    for (int i = 0; i < n; i++) {
        double t = now_us();
        run_op(op);
        samples[i] = now_us() - t;
    }
    double wall_us = now_us() - started;
    qsort(samples, n, sizeof *samples, by_value);
    double p50 = samples[(int)((n - 1) * 0.50 + 0.5)];
    double p99 = samples[(int)((n - 1) * 0.99 + 0.5)];
    printf("{\"case\":\"%s\",\"p50_us\":%.2f,\"p99_us\":%.2f,\"ops_per_s\":%.2f,\"iterations\":%d",
           name, p50, p99, n / (wall_us / 1e6), n);
    if (peer != NULL)
        printf(",\"peer\":\"%s\",\"speedup_vs_peer\":%.2f", peer, peer_p50 / p50);
    printf("}\n");
    fflush(stdout);
    return p50;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SOCKET ITERATIONS SPAWNS\n", argv[0]);
        return 2;
    }
    int iterations = atoi(argv[2]), spawns = atoi(argv[3]);
    double *samples = malloc(sizeof *samples * (iterations > spawns ? iterations : spawns));
    for (size_t i = 0; i < sizeof input; i++)
        input[i] = i % 64 == 63 ? '\n' : 'a' + i % 26;

    driver_t *connected = NULL, *embedded = NULL;
    if (driver_connect(argv[1], &connected) != DRIVER_STATUS_OK ||
        driver_open_embedded(NULL, NULL, &embedded) != DRIVER_STATUS_OK)
        fail(driver_last_error());

    for (int wc = 0; wc <= 1; wc++) {
        const char *tool = wc ? "wc" : "true";
        char peer[64], name[64];
        snprintf(peer, sizeof peer, "c/posix-spawn/%s", tool);
        op_t spawned = {NULL, wc}, ring = {connected, wc}, local = {embedded, wc};
        double peer_p50 = measure(peer, &spawned, samples, spawns, NULL, 0);
        snprintf(name, sizeof name, "c/ring/%s", tool);
        measure(name, &ring, samples, iterations, peer, peer_p50);
        snprintf(name, sizeof name, "c/embedded/%s", tool);
        measure(name, &local, samples, iterations, peer, peer_p50);
    }
    driver_close(connected);
    driver_close(embedded);
    free(samples);
    return 0;
}
