/*
 * The `sqlite` tool: SQL against a database file in a mount, over SQLite's amalgamation
 * (from the libsqlite3-sys crate) with its minimal VFS for WASI (no locking: a call has
 * the file to itself, or shares it read-only).
 *
 *   sqlite [--csv] [--readonly] DATABASE SQL
 *
 * Every statement of SQL runs in order; the rows of each are printed as JSON lines (one
 * object per row, keyed by column name: integers and reals as numbers (a real always with
 * a fraction or exponent, NaN and infinities as null), text as strings,
 * blobs as lower-case hex strings, NULL as null) or, with --csv, as CSV with a header line.
 * An error prints `sqlite: ERROR` on stderr and exits 1; a usage error exits 2.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

#define EXIT_ERROR 1
#define EXIT_USAGE 2

/* Writes `text` as a JSON string. */
static void json_string(const unsigned char *text, int length)
{
    putchar('"');
    for (int i = 0; i < length; i++) {
        unsigned char c = text[i];
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20)
                printf("\\u%04x", c);
            else
                putchar(c);
        }
    }
    putchar('"');
}

/* Writes `text` as one CSV field, quoted when it must be. */
static void csv_field(const unsigned char *text, int length)
{
    int quote = 0;
    for (int i = 0; i < length && !quote; i++)
        quote = text[i] == ',' || text[i] == '"' || text[i] == '\n' || text[i] == '\r';
    if (!quote) {
        fwrite(text, 1, (size_t)length, stdout);
        return;
    }
    putchar('"');
    for (int i = 0; i < length; i++) {
        if (text[i] == '"')
            putchar('"');
        putchar(text[i]);
    }
    putchar('"');
}

/* Writes a REAL as a JSON number that reads back the same and stays a real ("5.0"); JSON
 * has no NaN or infinity, so those are null. */
static void json_real(double value)
{
    if (isnan(value) || isinf(value)) {
        fputs("null", stdout);
        return;
    }
    char text[32];
    snprintf(text, sizeof text, "%.15g", value);
    if (strtod(text, NULL) != value)
        snprintf(text, sizeof text, "%.17g", value);
    fputs(text, stdout);
    if (strpbrk(text, ".e") == NULL)
        fputs(".0", stdout);
}

static void hex(const unsigned char *bytes, int length)
{
    for (int i = 0; i < length; i++)
        printf("%02x", bytes[i]);
}

static void json_row(sqlite3_stmt *statement)
{
    int columns = sqlite3_column_count(statement);
    putchar('{');
    for (int i = 0; i < columns; i++) {
        const char *name = sqlite3_column_name(statement, i);
        if (i > 0)
            putchar(',');
        json_string((const unsigned char *)name, (int)strlen(name));
        putchar(':');
        switch (sqlite3_column_type(statement, i)) {
        case SQLITE_INTEGER:
            printf("%lld", sqlite3_column_int64(statement, i));
            break;
        case SQLITE_FLOAT:
            json_real(sqlite3_column_double(statement, i));
            break;
        case SQLITE_TEXT:
            json_string(sqlite3_column_text(statement, i), sqlite3_column_bytes(statement, i));
            break;
        case SQLITE_BLOB:
            putchar('"');
            hex(sqlite3_column_blob(statement, i), sqlite3_column_bytes(statement, i));
            putchar('"');
            break;
        default:
            fputs("null", stdout);
        }
    }
    puts("}");
}

static void csv_row(sqlite3_stmt *statement, int header)
{
    int columns = sqlite3_column_count(statement);
    for (int i = 0; i < columns; i++) {
        if (i > 0)
            putchar(',');
        if (header) {
            const char *name = sqlite3_column_name(statement, i);
            csv_field((const unsigned char *)name, (int)strlen(name));
        } else if (sqlite3_column_type(statement, i) == SQLITE_BLOB) {
            hex(sqlite3_column_blob(statement, i), sqlite3_column_bytes(statement, i));
        } else if (sqlite3_column_type(statement, i) != SQLITE_NULL) {
            csv_field(sqlite3_column_text(statement, i), sqlite3_column_bytes(statement, i));
        }
    }
    putchar('\n');
}

static int usage(void)
{
    fputs("sqlite: usage: sqlite [--csv] [--readonly] DATABASE SQL\n", stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    int csv = 0, flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--csv") == 0)
            csv = 1;
        else if (strcmp(argv[i], "--readonly") == 0)
            flags = SQLITE_OPEN_READONLY;
        else
            return usage();
    }
    if (argc - i != 2)
        return usage();
    sqlite3 *db;
    if (sqlite3_open_v2(argv[i], &db, flags, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", argv[i], sqlite3_errmsg(db));
        return EXIT_ERROR;
    }
    const char *sql = argv[i + 1];
    int status = 0;
    while (*sql != '\0' && status == 0) {
        sqlite3_stmt *statement;
        const char *rest;
        if (sqlite3_prepare_v2(db, sql, -1, &statement, &rest) != SQLITE_OK) {
            fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
            status = EXIT_ERROR;
            break;
        }
        sql = rest;
        if (statement == NULL)
            continue; /* whitespace or a comment */
        int rows = 0, step;
        while ((step = sqlite3_step(statement)) == SQLITE_ROW) {
            if (csv && rows == 0)
                csv_row(statement, 1);
            if (csv)
                csv_row(statement, 0);
            else
                json_row(statement);
            rows++;
        }
        if (step != SQLITE_DONE) {
            fflush(stdout);
            fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
            status = EXIT_ERROR;
        }
        sqlite3_finalize(statement);
    }
    if (sqlite3_close(db) != SQLITE_OK && status == 0) {
        fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
        status = EXIT_ERROR;
    }
    return status;
}
