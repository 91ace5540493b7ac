/*
 * The C cases of bench/run: `true` through libdriver, connected to a running supervisor
 * (c/ring/true) and embedded (c/embedded/true), against posix_spawn + waitpid of /bin/true
 * (c/posix-spawn/true), all in one run. Prints one JSON object per case.
 *
 *   bench_driver SOCKET ITERATIONS SPAWNS
 */
#define _POSIX_C_SOURCE 200809L

#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "driver.h"

extern char **environ;

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

/* Prints a case's line; returns its p50. */
static double report(const char *name, double *samples, int n, double wall_us, double peer_p50)
{
    qsort(samples, n, sizeof *samples, by_value);
    double p50 = samples[(int)((n - 1) * 0.50 + 0.5)];
    double p99 = samples[(int)((n - 1) * 0.99 + 0.5)];
    printf("{\"case\":\"%s\",\"p50_us\":%.2f,\"p99_us\":%.2f,\"ops_per_s\":%.2f,\"iterations\":%d",
           name, p50, p99, n / (wall_us / 1e6), n);
    if (peer_p50 > 0)
        printf(",\"peer\":\"c/posix-spawn/true\",\"speedup_vs_peer\":%.2f", peer_p50 / p50);
    printf("}\n");
    fflush(stdout);
    return p50;
}

static void spawn_true(void)
{
    pid_t pid;
    char *argv[] = {"/bin/true", NULL};
    int status;
    if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0 ||
        waitpid(pid, &status, 0) != pid || status != 0) {
        fprintf(stderr, "bench_driver: /bin/true failed\n");
        exit(1);
    }
}

static void call_true(driver_t *driver)
{
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = "true";
    driver_result_t *result = NULL;
    if (driver_run(driver, &request, &result) != DRIVER_STATUS_OK) {
        fprintf(stderr, "bench_driver: %s\n", driver_last_error());
        exit(1);
    }
    driver_result_free(result);
}

static void measure_driver(const char *name, driver_t *driver, double *samples, int n,
                           double peer_p50)
{
    for (int i = 0; i < n / 10; i++)
        call_true(driver);
    double started = now_us();
    for (int i = 0; i < n; i++) {
        double t = now_us();
        call_true(driver);
        samples[i] = now_us() - t;
    }
    report(name, samples, n, now_us() - started, peer_p50);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SOCKET ITERATIONS SPAWNS\n", argv[0]);
        return 2;
    }
    int iterations = atoi(argv[2]), spawns = atoi(argv[3]);
    double *samples = malloc(sizeof *samples * (iterations > spawns ? iterations : spawns));

    double started = now_us();
    for (int i = 0; i < spawns; i++) {
        double t = now_us();
        spawn_true();
        samples[i] = now_us() - t;
    }
    double peer_p50 = report("c/posix-spawn/true", samples, spawns, now_us() - started, 0);

    driver_t *driver = NULL;
    if (driver_connect(argv[1], &driver) != DRIVER_STATUS_OK) {
        fprintf(stderr, "bench_driver: %s\n", driver_last_error());
        return 1;
    }
    measure_driver("c/ring/true", driver, samples, iterations, peer_p50);
    driver_close(driver);

    if (driver_open_embedded(NULL, NULL, &driver) != DRIVER_STATUS_OK) {
        fprintf(stderr, "bench_driver: %s\n", driver_last_error());
        return 1;
    }
    measure_driver("c/embedded/true", driver, samples, iterations, peer_p50);
    driver_close(driver);
    free(samples);
    return 0;
}
