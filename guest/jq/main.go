// The `jq` tool: gojq (github.com/itchyny/gojq), a jq implementation in pure Go, built for
// wasm32 WASI (GOOS=wasip1 GOARCH=wasm) as a plain command:
//
//	jq [-r] [-c] [-n] FILTER
//
// It reads JSON values from stdin (none with -n), runs FILTER on each and prints every
// result as JSON, indented by two spaces unless -c; with -r, string results are printed
// raw. Errors go to stderr: 2 for usage, 3 for a filter that does not compile, 5 for a
// runtime error or bad input, as jq does.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/itchyny/gojq"
)

const (
	exitUsage   = 2
	exitCompile = 3
	exitRuntime = 5
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	raw, compact, null := false, false, false
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		switch arg {
		case "-r":
			raw = true
		case "-c":
			compact = true
		case "-n":
			null = true
		default:
			fmt.Fprintf(stderr, "jq: unknown option %s\n", arg)
			return exitUsage
		}
	}
	if len(args)-i != 1 {
		fmt.Fprintln(stderr, "jq: usage: jq [-r] [-c] [-n] FILTER (input on stdin)")
		return exitUsage
	}
	filter := args[i]
	query, err := gojq.Parse(filter)
	if err != nil {
		fmt.Fprintf(stderr, "jq: error: %v\n", err)
		return exitCompile
	}
	code, err := gojq.Compile(query)
	if err != nil {
		fmt.Fprintf(stderr, "jq: error: %v\n", err)
		return exitCompile
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	emit := func(input any) int {
		iter := code.Run(input)
		for {
			value, ok := iter.Next()
			if !ok {
				return 0
			}
			if err, isErr := value.(error); isErr {
				var halt *gojq.HaltError
				if errors.As(err, &halt) && halt.Value() == nil {
					return halt.ExitCode()
				}
				out.Flush()
				fmt.Fprintf(stderr, "jq: error: %v\n", err)
				return exitRuntime
			}
			if err := write(out, value, raw, compact); err != nil {
				fmt.Fprintf(stderr, "jq: error: %v\n", err)
				return exitRuntime
			}
		}
	}
	if null {
		return emit(nil)
	}
	decoder := json.NewDecoder(bufio.NewReader(stdin))
	decoder.UseNumber()
	for {
		var input any
		if err := decoder.Decode(&input); err == io.EOF {
			return 0
		} else if err != nil {
			out.Flush()
			fmt.Fprintf(stderr, "jq: error: cannot parse input: %v\n", err)
			return exitRuntime
		}
		if status := emit(normalize(input)); status != 0 {
			return status
		}
	}
}

// normalize turns json.Number into the int or float64 gojq computes with.
func normalize(value any) any {
	switch v := value.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return int(n)
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i, item := range v {
			v[i] = normalize(item)
		}
	case map[string]any:
		for key, item := range v {
			v[key] = normalize(item)
		}
	}
	return value
}

func write(out *bufio.Writer, value any, raw, compact bool) error {
	if text, isString := value.(string); raw && isString {
		_, err := fmt.Fprintln(out, text)
		return err
	}
	encoded, err := gojq.Marshal(value)
	if err != nil {
		return err
	}
	if !compact {
		// gojq's own encoding (its number forms, no HTML escaping), indented as jq does.
		var indented bytes.Buffer
		if err := json.Indent(&indented, encoded, "", "  "); err != nil {
			return err
		}
		encoded = indented.Bytes()
	}
	out.Write(encoded)
	return out.WriteByte('\n')
}
