/*
 * The `js` tool: QuickJS-ng as a WASI reactor.
 *
 * At pack time `wizer.initialize` creates the runtime, one context with the standard
 * objects and `console`, and the snapshot of that state becomes the module's memory image,
 * so a call starts with JavaScript ready instead of building it (which costs hundreds of
 * microseconds). Each call runs `run` in a fresh instance of that snapshot:
 *
 *   js -c CODE [--input JSON]
 *
 * `input` is bound to the parsed JSON (undefined without it), `console.log` writes to
 * stdout, the value of the last expression is printed as JSON (nothing when it is
 * undefined), and an uncaught exception prints its message and stack on stderr and exits 1.
 *
 * QuickJS does not bound its recursion on WASI; the engine's wasm stack does: about 1,200
 * levels of JavaScript recursion, then the call ends as a trap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#include "argv.h"

#include "quickjs.h"

/* Exit statuses. */
#define EXIT_EXCEPTION 1
#define EXIT_USAGE 2

static JSRuntime *runtime;
static JSContext *context;

/* console.log and friends: arguments converted to strings, joined by spaces. */
static JSValue console_write(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv,
                             int magic)
{
    (void)this_val;
    FILE *out = magic ? stderr : stdout;
    for (int i = 0; i < argc; i++) {
        size_t len;
        const char *text = JS_ToCStringLen(ctx, &len, argv[i]);
        if (text == NULL)
            return JS_EXCEPTION;
        if (i > 0)
            fputc(' ', out);
        fwrite(text, 1, len, out);
        JS_FreeCString(ctx, text);
    }
    fputc('\n', out);
    return JS_UNDEFINED;
}

static const JSCFunctionListEntry console_functions[] = {
    JS_CFUNC_MAGIC_DEF("log", 1, console_write, 0),
    JS_CFUNC_MAGIC_DEF("info", 1, console_write, 0),
    JS_CFUNC_MAGIC_DEF("debug", 1, console_write, 0),
    JS_CFUNC_MAGIC_DEF("warn", 1, console_write, 1),
    JS_CFUNC_MAGIC_DEF("error", 1, console_write, 1),
};

/* Builds the runtime and context once; pack snapshots the result. */
__attribute__((export_name("wizer.initialize"))) void initialize(void)
{
    runtime = JS_NewRuntime();
    if (runtime == NULL)
        abort();
    context = JS_NewContext(runtime);
    if (context == NULL)
        abort();
    JSValue global = JS_GetGlobalObject(context);
    JSValue console = JS_NewObject(context);
    JS_SetPropertyFunctionList(context, console, console_functions,
                               sizeof console_functions / sizeof console_functions[0]);
    JS_SetPropertyStr(context, global, "console", console);
    JS_SetPropertyStr(context, global, "input", JS_UNDEFINED);
    JS_FreeValue(context, global);
}

/* Prints the pending exception (message, then stack) on stderr. */
static void print_exception(void)
{
    JSValue exception = JS_GetException(context);
    const char *message = JS_ToCString(context, exception);
    fprintf(stderr, "Uncaught %s\n", message ? message : "exception");
    JS_FreeCString(context, message);
    if (JS_IsError(exception)) {
        JSValue stack = JS_GetPropertyStr(context, exception, "stack");
        const char *text = JS_IsUndefined(stack) ? NULL : JS_ToCString(context, stack);
        if (text != NULL && *text != '\0')
            fprintf(stderr, "%s", text);
        JS_FreeCString(context, text);
        JS_FreeValue(context, stack);
    }
    JS_FreeValue(context, exception);
}

/* Prints `value` as JSON on stdout, unless it has no JSON form (undefined, a function). */
static int print_json(JSValueConst value)
{
    if (JS_IsUndefined(value))
        return 0;
    JSValue json = JS_JSONStringify(context, value, JS_UNDEFINED, JS_UNDEFINED);
    if (JS_IsException(json))
        return -1;
    if (!JS_IsUndefined(json)) {
        size_t len;
        const char *text = JS_ToCStringLen(context, &len, json);
        if (text == NULL) {
            JS_FreeValue(context, json);
            return -1;
        }
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
        JS_FreeCString(context, text);
    }
    JS_FreeValue(context, json);
    return 0;
}

/* Runs queued promise jobs, so `.then` callbacks and async functions finish. */
static int run_jobs(void)
{
    JSContext *job_context;
    int ran;
    while ((ran = JS_ExecutePendingJob(runtime, &job_context)) > 0) {
    }
    return ran;
}

__attribute__((export_name("run"))) int run(void)
{
    if (context == NULL)
        initialize();
    const char *code, *input;
    int status = read_code_args("js", &code, &input);
    if (status != 0)
        return status;
    if (input != NULL) {
        JSValue parsed = JS_ParseJSON(context, input, strlen(input), "<input>");
        if (JS_IsException(parsed)) {
            print_exception();
            return EXIT_USAGE;
        }
        JSValue global = JS_GetGlobalObject(context);
        JS_SetPropertyStr(context, global, "input", parsed);
        JS_FreeValue(context, global);
    }
    JSValue result = JS_Eval(context, code, strlen(code), "<code>", JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(result) || run_jobs() < 0 || print_json(result) < 0) {
        print_exception();
        status = EXIT_EXCEPTION;
    }
    JS_FreeValue(context, result);
    fflush(stdout);
    fflush(stderr);
    return status;
}
