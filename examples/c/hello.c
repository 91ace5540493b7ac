/*
 * The smallest libdriver program: run `echo` embedded (no server needed), or through a
 * running supervisor when given its socket.
 *
 *   cc hello.c $(pkg-config --cflags --libs driver) -o hello && ./hello [SOCKET]
 */
#include <stdio.h>
#include <string.h>

#include "driver.h"

int main(int argc, char **argv)
{
    driver_t *driver = NULL;
    driver_status status = argc > 1 ? driver_connect(argv[1], &driver)
                                    : driver_open_embedded(NULL, NULL, &driver);
    if (status != DRIVER_STATUS_OK) {
        fprintf(stderr, "hello: %s\n", driver_last_error());
        return 1;
    }
    const char *args[] = {"hello", "from", "libdriver"};
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = "echo";
    request.argv = args;
    request.argc = 3;
    driver_result_t *result = NULL;
    status = driver_run(driver, &request, &result);
    if (status != DRIVER_STATUS_OK) {
        fprintf(stderr, "hello: %s\n", driver_last_error());
        driver_close(driver);
        return 1;
    }
    size_t len = 0;
    const uint8_t *out = driver_result_stdout(result, &len);
    fwrite(out, 1, len, stdout);
    driver_result_free(result);
    driver_close(driver);
    return 0;
}
