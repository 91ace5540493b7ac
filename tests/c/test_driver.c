/*
 * libdriver from C: test_driver connected SOCKET | test_driver embedded
 * Exits 0 when every check passes; prints the first failure otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "driver.h"

static driver_t *driver;

/* Runs TOOL with ARGC arguments and STDIN; returns the status, the result in *OUT. */
static driver_status run(const char *tool, const char *const *argv, size_t argc,
                         const char *stdin_text, driver_result_t **out)
{
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = tool;
    request.argv = argv;
    request.argc = argc;
    if (stdin_text) {
        request.stdin = (const uint8_t *)stdin_text;
        request.stdin_len = strlen(stdin_text);
    }
    return driver_run(driver, &request, out);
}

static int stdout_is(const driver_result_t *result, const char *expected)
{
    size_t len = 0;
    const uint8_t *bytes = driver_result_stdout(result, &len);
    return len == strlen(expected) && memcmp(bytes, expected, len) == 0;
}

static void *echo_many(void *arg)
{
    char text[32], expected[40];
    for (int i = 0; i < 50; i++) {
        snprintf(text, sizeof text, "thread-%ld-%d", (long)(size_t)arg, i);
        snprintf(expected, sizeof expected, "%s\n", text);
        const char *argv[] = {text};
        driver_result_t *result = NULL;
        CHECK(run("echo", argv, 1, NULL, &result) == DRIVER_STATUS_OK);
        CHECK(stdout_is(result, expected));
        driver_result_free(result);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "connected") == 0) {
        CHECK(driver_connect(argv[2], &driver) == DRIVER_STATUS_OK);
    } else if (argc >= 2 && strcmp(argv[1], "embedded") == 0) {
        CHECK(driver_open_embedded(NULL, NULL, &driver) == DRIVER_STATUS_OK);
    } else {
        fprintf(stderr, "usage: %s connected SOCKET | embedded\n", argv[0]);
        return 2;
    }

    driver_result_t *result = NULL;
    const char *hello[] = {"hello", "from", "C"};
    CHECK(run("echo", hello, 3, NULL, &result) == DRIVER_STATUS_OK);
    CHECK(driver_result_exit_code(result) == 0);
    CHECK(stdout_is(result, "hello from C\n"));
    driver_result_free(result);

    const char *lines[] = {"-l"};
    CHECK(run("wc", lines, 1, "a\nb\nc\n", &result) == DRIVER_STATUS_OK);
    CHECK(stdout_is(result, "3\n"));
    driver_result_free(result);

    /* A tool that exits non-zero is a result, not an error. */
    CHECK(run("false", NULL, 0, NULL, &result) == DRIVER_STATUS_OK);
    CHECK(driver_result_exit_code(result) == 1);
    driver_result_free(result);

    /* Errors are codes plus a message. */
    result = NULL;
    CHECK(run("nope", NULL, 0, NULL, &result) == DRIVER_STATUS_TOOL_NOT_FOUND);
    CHECK(result == NULL);
    CHECK(strstr(driver_last_error(), "available") != NULL);
    CHECK(driver_run(driver, NULL, &result) == DRIVER_STATUS_INVALID_ARGUMENT);
    CHECK(driver_connect("/nonexistent/megavisor.sock", &(driver_t *){NULL}) ==
          DRIVER_STATUS_CONNECTION_LOST);

    /* An execution id replays its first result, and says so; timings come whole. */
    char id[64];
    snprintf(id, sizeof id, "c-replay-%ld-%s", (long)getpid(), argv[1]);
    driver_request_t replayed;
    memset(&replayed, 0, sizeof replayed);
    replayed.tool = "echo";
    replayed.argv = hello;
    replayed.argc = 1;
    replayed.execution_id = id;
    CHECK(driver_run(driver, &replayed, &result) == DRIVER_STATUS_OK);
    CHECK(!driver_result_cached(result));
    driver_timings_t timings = driver_result_timings(result);
    CHECK(timings.total_us > 0);
    CHECK(timings.run_us <= timings.total_us);
    CHECK(timings.total_us == driver_result_total_us(result));
    driver_result_free(result);
    CHECK(driver_run(driver, &replayed, &result) == DRIVER_STATUS_OK);
    CHECK(driver_result_cached(result));
    CHECK(stdout_is(result, "hello\n"));
    driver_result_free(result);

    /* Code that reads a mounted file. */
    char data[] = "/tmp/mv-c-data-XXXXXX";
    CHECK(mkdtemp(data) != NULL);
    char csv[96], mount[128];
    snprintf(csv, sizeof csv, "%s/n.csv", data);
    FILE *file = fopen(csv, "w");
    CHECK(file != NULL);
    fputs("n\n2\n40\n", file);
    fclose(file);
    snprintf(mount, sizeof mount, "%s:/data", data);
    const char *mounts[] = {mount};
    driver_request_t code;
    memset(&code, 0, sizeof code);
    code.tool = "python";
    code.params_json = "{\"code\": \"print(sum(int(l) for l in open('/data/n.csv').read().split()[1:]))\"}";
    code.mounts = mounts;
    code.mount_count = 1;
    CHECK(driver_run(driver, &code, &result) == DRIVER_STATUS_OK);
    CHECK(stdout_is(result, "42\n"));
    driver_result_free(result);
    const char *bad_mounts[] = {"no-guest-path"};
    code.mounts = bad_mounts;
    CHECK(driver_run(driver, &code, &result) == DRIVER_STATUS_BAD_REQUEST);
    CHECK(strstr(driver_last_error(), "HOST:GUEST") != NULL);
    unlink(csv);
    rmdir(data);

    /* A session keeps what a call defines for the next. */
    uint64_t session = 0;
    CHECK(driver_open_session(driver, "python", &session) == DRIVER_STATUS_OK);
    CHECK(session != 0);
    driver_request_t step;
    memset(&step, 0, sizeof step);
    step.tool = "python";
    step.session = session;
    step.params_json = "{\"code\": \"def cube(x):\\n    return x ** 3\"}";
    CHECK(driver_run(driver, &step, &result) == DRIVER_STATUS_OK);
    CHECK(driver_result_exit_code(result) == 0);
    driver_result_free(result);
    step.params_json = "{\"code\": \"print(cube(3))\"}";
    CHECK(driver_run(driver, &step, &result) == DRIVER_STATUS_OK);
    CHECK(stdout_is(result, "27\n"));
    driver_result_free(result);
    CHECK(driver_close_session(driver, session) == DRIVER_STATUS_OK);
    CHECK(driver_run(driver, &step, &result) == DRIVER_STATUS_SESSION_GONE);
    CHECK(driver_close_session(driver, session) == DRIVER_STATUS_SESSION_GONE);
    CHECK(driver_open_session(driver, "wc", &session) == DRIVER_STATUS_BAD_REQUEST);

    char *tools = NULL;
    CHECK(driver_tools_json(driver, &tools) == DRIVER_STATUS_OK);
    CHECK(strstr(tools, "\"name\":\"wc\"") != NULL);
    driver_string_free(tools);

    /* One driver, several threads. */
    pthread_t threads[4];
    for (long t = 0; t < 4; t++)
        CHECK(pthread_create(&threads[t], NULL, echo_many, (void *)(size_t)t) == 0);
    for (int t = 0; t < 4; t++)
        CHECK(pthread_join(threads[t], NULL) == 0);

    driver_close(driver);
    puts("libdriver: all checks passed");
    return 0;
}
