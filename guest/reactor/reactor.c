/*
 * A WASI reactor for the tests of modules that are not busybox-style commands: it has no
 * main, and its tools are exported functions. The same module is packed twice, once as
 * is and once pre-initialized, so the tests can tell a snapshot from a fresh start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#include "../common/argv.h"

/* State the initializer builds: a table and the mark that it ran. */
static int squares[64];
static int initialized;

/* Exported so pack can snapshot it: what a language runtime would do at start-up. */
__attribute__((export_name("wizer.initialize"))) void initialize(void)
{
    for (int i = 0; i < 64; i++)
        squares[i] = i * i;
    initialized = 1;
}

/* greet: prints its argv joined by spaces; returns 3 when its first argument is "fail". */
__attribute__((export_name("greet"))) int greet(void)
{
    size_t count;
    char **argv = read_argv(&count);
    if (argv == NULL)
        return 70;
    for (size_t i = 0; i < count; i++)
        printf("%s%s", i ? " " : "", argv[i]);
    printf("\n");
    return count > 1 && strcmp(argv[1], "fail") == 0 ? 3 : 0;
}

/* state: says whether the initializer's state is there, and a value from its table. */
__attribute__((export_name("state"))) void state(void)
{
    printf("initialized=%d square(9)=%d\n", initialized, squares[9]);
}

/* bump: a type no entry may call (it takes an argument). */
__attribute__((export_name("bump"))) int bump(int by)
{
    initialized += by;
    return initialized;
}
