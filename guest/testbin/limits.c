/* Tools that push against the supervisor's limits and isolation. */
#include "tools.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB (1024 * 1024)

/* Milliseconds on the monotonic clock. */
static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * spin [MS]: busy-loops for MS milliseconds, then prints "spun" and exits 0; without MS,
 * forever, until the time limit stops it. (A busy loop, not a sleep: a sleeping guest is
 * in a host call, where the time limit cannot reach it.)
 */
int tool_spin(int argc, char **argv)
{
    /* A volatile store on every iteration: the loop has an observable effect, so the
     * compiler may neither drop it nor assume it terminates. */
    volatile unsigned long long spins = 0;
    long long until = argc > 1 ? now_ms() + atoll(argv[1]) : -1;

    while (until < 0 || now_ms() < until)
        spins++;
    puts("spun");
    return 0;
}

/*
 * sleep MS: sleeps MS milliseconds (nanosleep: in the host, in WASI's poll_oneoff), then
 * prints "slept" and exits 0.  The time limit and cancellation must reach it there too.
 */
int tool_sleep(int argc, char **argv)
{
    long long ms;
    struct timespec ts;

    if (argc != 2)
        return usage("sleep", "MS");
    ms = atoll(argv[1]);
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    puts("slept");
    return 0;
}

/* The newest block; each block's first word links to the one before. */
static void *volatile newest;

/*
 * alloc: allocates and touches 1 MiB after another, without end.  Normally the
 * memory limit stops the guest; if malloc ever fails instead, it says so and exits 3.
 */
int tool_alloc(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (unsigned long mib = 0;; mib++) {
        void **block = malloc(MIB);

        if (block == NULL) {
            fprintf(stderr, "alloc: out of memory after %lu MiB\n", mib);
            return 3;
        }
        /* Touch every page, and keep every block reachable through a volatile
         * pointer, so the allocation cannot be optimised away. */
        memset(block, 0xa5, MIB);
        block[0] = newest;
        newest = block;
    }
}

/* trap: executes an unreachable instruction. */
int tool_trap(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    __builtin_trap();
}

/*
 * State that survives between calls only if an instance is reused.  Volatile, so
 * the compiler cannot fold the first call's values into constants: what is tested
 * is the memory the runtime hands over, not what the compiler can prove.
 */
static volatile int counter;
static volatile unsigned char scratch[4096];

/*
 * counter: prints "counter=N dirty=D" where N is the counter after incrementing it
 * and D is 1 if the buffer held anything but zeros, then dirties the buffer.  A
 * fresh instance always prints "counter=1 dirty=0".
 */
int tool_counter(int argc, char **argv)
{
    int dirty = 0;

    (void)argc;
    (void)argv;
    counter++;
    for (size_t i = 0; i < sizeof scratch; i++) {
        if (scratch[i] != 0)
            dirty = 1;
    }
    printf("counter=%d dirty=%d\n", counter, dirty);
    for (size_t i = 0; i < sizeof scratch; i++)
        scratch[i] = 0xab;
    return 0;
}
