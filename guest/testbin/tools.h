/*
 * The test megabinary: small tools whose only purpose is to exercise the supervisor
 * (exit codes, argv and environment passing, limits, traps, instance freshness,
 * mounts, output capture and artifacts).  Each returns its exit status.
 *
 * Include this header first: it selects POSIX.1-2008, which -std=c11 would hide.
 */
#ifndef TESTBIN_TOOLS_H
#define TESTBIN_TOOLS_H

#define _POSIX_C_SOURCE 200809L

typedef int tool_fn(int argc, char **argv);

/* basic.c */
tool_fn tool_true, tool_exit, tool_args, tool_env, tool_stderr, tool_cat;
/* limits.c */
tool_fn tool_spin, tool_sleep, tool_alloc, tool_trap, tool_counter;
/* files.c */
tool_fn tool_read, tool_write, tool_probe, tool_artifacts;
/* flood.c */
tool_fn tool_flood;

/* Prints "TOOL: usage: TOOL ARGS" on stderr and returns 2. */
int usage(const char *tool, const char *args);

#endif
