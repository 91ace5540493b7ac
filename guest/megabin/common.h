/*
 * Helpers shared by every tool of the megabinary.
 *
 * Include this header first in every source file: it selects POSIX.1-2008, which
 * -std=c11 would otherwise hide (getline, getopt, fileno, fstatat, strdup, ...).
 */
#ifndef MEGABIN_COMMON_H
#define MEGABIN_COMMON_H

#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Exit status of a tool whose arguments make no sense. */
#define EXIT_USAGE 2

/* Size of the chunks the streaming tools read and write. */
#define CHUNK_SIZE 65536

/* A tool: it gets argv with argv[0] being its own name and returns the exit status. */
typedef int tool_fn(int argc, char **argv);

/* The running tool's name, which prefixes every message (set once by main). */
extern const char *tool_name;

/* Prints "TOOL: MESSAGE" and a newline on stderr. */
void error_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "TOOL: WHAT: strerror(errno)" on stderr. */
void error_errno(const char *what);

/*
 * Reports the option getopt() just refused (getopt must run with ':' leading the
 * option string, so that a missing argument is told apart from an unknown option),
 * prints the usage line and returns EXIT_USAGE.
 */
int usage_error(int getopt_result, const char *usage);

/* Prints "TOOL: MESSAGE", the usage line, and returns EXIT_USAGE. */
int usage_msg(const char *usage, const char *message);

/*
 * Parses a non-negative decimal count for option OPTION ("-n").  Prints an error
 * and returns false when TEXT is not one.
 */
bool parse_count(const char *text, const char *option, unsigned long long *count);

/*
 * The file operands left after getopt (argv[optind..]), or just "-" (stdin) when
 * there are none.  Sets *COUNT to how many.
 */
char **file_operands(int argc, char **argv, int *count);

/*
 * Opens PATH for reading; "-" is stdin.  On failure (a directory is one) prints
 * "TOOL: PATH: reason" and returns NULL.
 */
FILE *open_input(const char *path);

/*
 * Closes a stream from open_input (leaving stdin open).  Returns false, after
 * reporting it, if the stream had a read error.
 */
bool close_input(FILE *stream, const char *path);

/*
 * Calls EACH(stream, path, CONTEXT) on every file operand (see file_operands), opened
 * with open_input and closed after; with HEADERS and several files, prints "==> FILE
 * <==" before each, as head and tail do.  Returns 0, or 1 if a file could not be opened,
 * read or closed, or EACH returned false (it reports why).
 */
int each_input(int argc, char **argv, bool headers,
               bool (*each)(FILE *stream, const char *path, void *context), void *context);

/*
 * A buffer capacity of at least NEEDED bytes and more than CAP, roughly doubling.
 * It stays a little under a power of two because the wasm libc's allocator (zig's
 * WasmAllocator) rounds each request plus a 16-byte header up to a power of two:
 * plain doubling would waste half of every block.
 */
size_t next_capacity(size_t cap, size_t needed);

/*
 * Reads the rest of STREAM into a malloc'd buffer with a NUL after the last byte
 * (the data itself may contain NULs, so *LEN is authoritative).  Returns NULL with
 * errno set on a read error or when memory runs out.
 */
char *read_all(FILE *stream, size_t *len);

/*
 * Reads the next line of STREAM into *BUF (grown as needed) without its newline,
 * NUL-terminated, and sets *LEN to its length.  Returns false at end of input or on a read error (tell
 * them apart with ferror).
 */
bool read_line(FILE *stream, char **buf, size_t *cap, size_t *len);

/*
 * Returns the offset in BUF where its last N lines start.  A line ends with a
 * newline, except that text after the last newline is a final line of its own.
 */
size_t last_lines_start(const char *buf, size_t len, unsigned long long n);

/*
 * Writes a line (LEN bytes, then a newline) to stdout.  Output errors are
 * detected once, at exit, by finish().
 */
void put_line(const char *text, size_t len);

/* Flushes stdout; returns STATUS, or 1 after reporting it if any output was lost. */
int finish(int status);

#endif
