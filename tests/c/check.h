/* The C tests' one assertion: on failure, prints the condition, where, and libdriver's last
 * error, then exits 1. */
#ifndef MEGAVISOR_TESTS_CHECK_H
#define MEGAVISOR_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "driver.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__,   \
                    __LINE__, #cond, driver_last_error());                            \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#endif
