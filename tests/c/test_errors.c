/*
 * Every error kind reaches C as its driver_status code, with a message.
 *
 *   test_errors BUILD_DIR DEFAULT_SOCKET TEST_SOCKET BUSY_SOCKET REFUSING_SOCKET \
 *               DRAIN_SOCKET DRAIN_PID TAMPERED_BUNDLE STRANGER_KEY
 *
 * tests/c/run.sh starts the supervisors: on the default bundle, on the test bundle, one
 * with a single guest slot and no queue (busy), one that allows only uid 4242 (refusing),
 * and one this program sends SIGTERM to (draining).
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "driver.h"

/* The status of running TOOL with one optional argument and the given limits. */
static driver_status call(driver_t *driver, const char *tool, const char *arg,
                          uint64_t timeout_ms, uint64_t memory_bytes)
{
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = tool;
    request.argv = &arg;
    request.argc = arg != NULL;
    request.timeout_ms = timeout_ms;
    request.memory_bytes = memory_bytes;
    driver_result_t *result = NULL;
    driver_status status = driver_run(driver, &request, &result);
    driver_result_free(result);
    return status;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *spin(void *driver)
{
    CHECK(call(driver, "spin", "1500", 0, 0) == DRIVER_STATUS_OK);
    return NULL;
}

/* The kinds a call can fail with, on a driver of the test bundle. */
static void call_errors(driver_t *driver)
{
    CHECK(call(driver, "no-such-tool", NULL, 0, 0) == DRIVER_STATUS_TOOL_NOT_FOUND);
    CHECK(strstr(driver_last_error(), "available") != NULL);
    CHECK(call(driver, "spin", NULL, 50, 0) == DRIVER_STATUS_TIMEOUT);
    /* What the stopped call had done so far, once. */
    driver_result_t *partial = driver_take_partial();
    CHECK(partial != NULL);
    CHECK(driver_result_timings(partial).total_us >= 50000);
    driver_result_free(partial);
    CHECK(driver_take_partial() == NULL);
    /* Artifacts the tool reported. */
    driver_request_t reporting;
    memset(&reporting, 0, sizeof reporting);
    reporting.tool = "artifacts";
    driver_result_t *reported = NULL;
    CHECK(driver_run(driver, &reporting, &reported) == DRIVER_STATUS_OK);
    char *artifacts = NULL;
    CHECK(driver_result_artifacts_json(reported, &artifacts) == DRIVER_STATUS_OK);
    CHECK(strstr(artifacts, "\"report\":\"/out/report.txt\"") != NULL);
    driver_string_free(artifacts);
    driver_result_free(reported);
    CHECK(call(driver, "alloc", NULL, 0, 8 << 20) == DRIVER_STATUS_MEMORY_LIMIT);
    CHECK(call(driver, "trap", NULL, 0, 0) == DRIVER_STATUS_TRAP);
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = "true";
    request.params_json = "{\"bogus\": 1}";
    driver_result_t *result = NULL;
    CHECK(driver_run(driver, &request, &result) == DRIVER_STATUS_BAD_REQUEST);
    CHECK(strstr(driver_last_error(), "bogus") != NULL);
}

static void not_allowed(driver_t *driver)
{
    const char *env[] = {"SECRET=x"};
    driver_request_t request;
    memset(&request, 0, sizeof request);
    request.tool = "echo";
    request.env = env;
    request.env_count = 1;
    driver_result_t *result = NULL;
    CHECK(driver_run(driver, &request, &result) == DRIVER_STATUS_NOT_ALLOWED);
    CHECK(strstr(driver_last_error(), "SECRET") != NULL);
    /* A native binary, with no allowlist configured. */
    CHECK(call(driver, "/bin/ls", NULL, 0, 0) == DRIVER_STATUS_NOT_ALLOWED);
    CHECK(strstr(driver_last_error(), "native tools are not enabled") != NULL);
    /* A malformed env entry is the caller's mistake. */
    env[0] = "no equals sign";
    CHECK(driver_run(driver, &request, &result) == DRIVER_STATUS_INVALID_ARGUMENT);
}

/* A server that answers the handshake with a frame that is not a Welcome. */
static pid_t garbage_server(const char *path)
{
    int listener = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    CHECK(listener >= 0 && bind(listener, (struct sockaddr *)&addr, sizeof addr) == 0);
    CHECK(listen(listener, 1) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int conn = accept(listener, NULL, NULL);
        char buffer[4096];
        if (conn >= 0 && read(conn, buffer, sizeof buffer) > 0) {
            const char frame[] = "\x0e\x00\x00\x00\xff\xff\xff\xff not proto";
            if (write(conn, frame, sizeof frame - 1) < 0)
                _exit(1);
            sleep(1);
        }
        _exit(0);
    }
    close(listener);
    return pid;
}

/* Writes TEXT to PATH. */
static void write_file(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    CHECK(file != NULL);
    CHECK(fputs(text, file) >= 0);
    CHECK(fclose(file) == 0);
}

/* A policy file narrows what an embedded driver may do; a malformed one names its key. */
static void policies(const char *build, const char *key)
{
    char policy[4096];
    snprintf(policy, sizeof policy, "%s/c-test-policy.toml", build);
    write_file(policy, "[limits]\nmax_timeout = \"2s\"\n\n[native]\ndefault_timeout = \"1s\"\nbinaries = [\"/usr/bin/wc\"]\n");
    driver_t *driver = NULL;
    CHECK(driver_open_embedded_with_policy(NULL, key, policy, &driver) == DRIVER_STATUS_OK);
    CHECK(call(driver, "/usr/bin/wc", NULL, 0, 0) == DRIVER_STATUS_OK);
    CHECK(call(driver, "true", NULL, 5000, 0) == DRIVER_STATUS_BAD_REQUEST);
    CHECK(strstr(driver_last_error(), "maximum of 2000 ms") != NULL);
    driver_close(driver);
    write_file(policy, "[limits]\nmax_timeout = 5\n");
    CHECK(driver_open_embedded_with_policy(NULL, key, policy, &driver) == DRIVER_STATUS_BAD_REQUEST);
    CHECK(strstr(driver_last_error(), policy) != NULL);
    CHECK(strstr(driver_last_error(), "key `limits.max_timeout`") != NULL);
    CHECK(unlink(policy) == 0);
    /* The same structure inline. */
    CHECK(driver_open_embedded_with_policy_json(NULL, key, "{\"native\": {\"binaries\": [\"/usr/bin/wc\"]}}",
                                                &driver) == DRIVER_STATUS_OK);
    CHECK(call(driver, "/usr/bin/wc", NULL, 0, 0) == DRIVER_STATUS_OK);
    driver_close(driver);
    CHECK(driver_open_embedded_with_policy_json(NULL, key, "{\"native\": {\"binaries\": 1}}",
                                                &driver) == DRIVER_STATUS_BAD_REQUEST);
    CHECK(strstr(driver_last_error(), "policy <inline>: key `native.binaries`") != NULL);
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: see the comment at the top of %s\n", __FILE__);
        return 2;
    }
    const char *build = argv[1], *default_socket = argv[2], *test_socket = argv[3],
               *busy_socket = argv[4], *refusing_socket = argv[5], *drain_socket = argv[6],
               *tampered = argv[8], *stranger_key = argv[9];
    pid_t drain_pid = (pid_t)atol(argv[7]);
    char test_bundle[4096], key[4096];
    snprintf(test_bundle, sizeof test_bundle, "%s/test-bundle", build);
    snprintf(key, sizeof key, "%s/keys/megavisor.pub", build);
    driver_t *driver = NULL;

    /* Opening. */
    CHECK(driver_open_embedded(tampered, key, &driver) == DRIVER_STATUS_HASH_MISMATCH);
    CHECK(strstr(driver_last_error(), "megabin.wasm") != NULL);
    CHECK(driver_open_embedded(NULL, stranger_key, &driver) == DRIVER_STATUS_BAD_SIGNATURE);
    CHECK(driver_open_embedded("/nonexistent-bundle", key, &driver) == DRIVER_STATUS_INTERNAL);
    CHECK(strstr(driver_last_error(), "manifest.json") != NULL);
    CHECK(driver_connect("/nonexistent/megavisor.sock", &driver) ==
          DRIVER_STATUS_CONNECTION_LOST);
    CHECK(driver_connect(refusing_socket, &driver) == DRIVER_STATUS_NOT_ALLOWED);

    /* Calls, embedded and connected. */
    CHECK(driver_open_embedded(test_bundle, key, &driver) == DRIVER_STATUS_OK);
    call_errors(driver);
    driver_close(driver);
    CHECK(driver_connect(test_socket, &driver) == DRIVER_STATUS_OK);
    call_errors(driver);
    driver_close(driver);
    CHECK(driver_open_embedded(NULL, key, &driver) == DRIVER_STATUS_OK);
    not_allowed(driver);
    driver_close(driver);
    policies(build, key);
    CHECK(driver_connect(default_socket, &driver) == DRIVER_STATUS_OK);
    not_allowed(driver);
    driver_close(driver);

    /* Busy: the only guest slot is taken. */
    driver_t *holder = NULL;
    CHECK(driver_connect(busy_socket, &holder) == DRIVER_STATUS_OK);
    CHECK(driver_connect(busy_socket, &driver) == DRIVER_STATUS_OK);
    pthread_t spinner;
    CHECK(pthread_create(&spinner, NULL, spin, holder) == 0);
    sleep_ms(300);
    CHECK(call(driver, "spin", "1", 0, 0) == DRIVER_STATUS_BUSY);
    CHECK(pthread_join(spinner, NULL) == 0);
    driver_close(driver);
    driver_close(holder);

    /* Shutting down: the supervisor drains after SIGTERM; then it is gone. */
    CHECK(driver_connect(drain_socket, &holder) == DRIVER_STATUS_OK);
    CHECK(driver_connect(drain_socket, &driver) == DRIVER_STATUS_OK);
    CHECK(pthread_create(&spinner, NULL, spin, holder) == 0);
    sleep_ms(300);
    CHECK(kill(drain_pid, SIGTERM) == 0);
    sleep_ms(200);
    CHECK(call(driver, "true", NULL, 0, 0) == DRIVER_STATUS_SHUTTING_DOWN);
    CHECK(pthread_join(spinner, NULL) == 0); /* the call in flight finished */
    sleep_ms(500);
    CHECK(call(driver, "true", NULL, 0, 0) == DRIVER_STATUS_CONNECTION_LOST);
    driver_close(driver);
    driver_close(holder);

    /* Protocol: the peer does not speak megavisor. */
    char garbage[4096];
    snprintf(garbage, sizeof garbage, "%s/c/garbage-%ld.sock", build, (long)getpid());
    unlink(garbage);
    pid_t server = garbage_server(garbage);
    CHECK(driver_connect(garbage, &driver) == DRIVER_STATUS_PROTOCOL);
    waitpid(server, NULL, 0);
    unlink(garbage);

    puts("libdriver: every error kind checked");
    return 0;
}
