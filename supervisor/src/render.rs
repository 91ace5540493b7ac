//! Turning results into what a shell user sees: passed-through streams and exit codes, or
//! one JSON document with everything.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use megavisor_core::{Error, Output};
use megavisor_driver::convert;
use serde_json::{Value, json};

/// A failure from the engine in-process or from a supervisor, as the CLI reports it.
#[derive(Debug)]
pub struct Reported {
    /// The stable kind name (`timeout`, `busy`, ...).
    kind: &'static str,
    message: String,
    partial: Option<Output>,
}

impl Reported {
    /// The stable kind name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn partial_output(&self) -> Option<&Output> {
        self.partial.as_ref()
    }
}

impl From<Error> for Reported {
    fn from(err: Error) -> Self {
        Reported {
            kind: err.kind().as_str(),
            message: err.to_string(),
            partial: err.partial_output().cloned(),
        }
    }
}

impl From<megavisor_client::Error> for Reported {
    fn from(err: megavisor_client::Error) -> Self {
        Reported {
            kind: err.kind().as_str(),
            message: err.to_string(),
            partial: err.partial_output().cloned().map(convert::output_from_wire),
        }
    }
}

/// Exit code for a failure of this kind (tool exit codes pass through unchanged), from the
/// one table of kinds (`megavisor_client::kinds`).
pub fn exit_code_for(kind: &str) -> ExitCode {
    let kind = megavisor_client::ErrorKind::from_name(kind);
    ExitCode::from(kind.map_or(1, |kind| kind.info().exit_code))
}

/// Reports an invocation: JSON, or the guest's own streams and exit code.
pub fn report<E: Into<Reported>>(outcome: Result<Output, E>, as_json: bool) -> ExitCode {
    match outcome.map_err(Into::into) {
        Ok(output) => {
            if as_json {
                print_json(&to_json(&output, None));
            } else {
                pass_through(&output);
            }
            ExitCode::from(output.exit_code.clamp(0, 255) as u8)
        }
        Err(err) => {
            match (err.partial_output(), as_json) {
                (Some(partial), true) => print_json(&to_json(partial, Some(&err))),
                (None, true) => print_json(&json!({ "error": error_json(&err) })),
                (Some(partial), false) => {
                    pass_through(partial);
                    print_error(&err);
                }
                (None, false) => print_error(&err),
            }
            exit_code_for(err.kind)
        }
    }
}

/// Prints a failure as `megavisor: MESSAGE (KIND)` on stderr.
pub fn print_error(err: &Reported) {
    let line = format!("megavisor: {} ({})\n", err.message, err.kind);
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn pass_through(output: &Output) {
    out(&output.stdout);
    let _ = std::io::stderr().write_all(&output.stderr);
    if output.stdout_truncated() {
        let note = format!(
            "megavisor: stdout truncated: kept {} of {} bytes\n",
            output.stdout.len(),
            output.stdout_total
        );
        let _ = std::io::stderr().write_all(note.as_bytes());
    }
}

fn print_json(value: &Value) {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    out(text.as_bytes());
}

/// `println!` for the CLI's own output, through [`out`]: quiet when the reader has gone.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::render::out(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}
pub(crate) use outln;

/// Writes to stdout. A reader that has gone (`| head`) is no error worth a word: what it
/// did not read was not wanted.
pub fn out(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
}

/// The whole result as JSON. Byte streams are strings when they are UTF-8, and otherwise
/// appear base64-encoded under `<name>_base64`, so nothing is lost.
pub fn to_json(output: &Output, error: Option<&Reported>) -> Value {
    let mut value = serde_json::to_value(output).expect("outputs serialize");
    let map = value.as_object_mut().expect("an object");
    for (name, bytes) in [
        ("stdout", &output.stdout),
        ("stderr", &output.stderr),
        ("stdout_tail", &output.stdout_tail),
        ("stderr_tail", &output.stderr_tail),
    ] {
        match std::str::from_utf8(bytes) {
            Ok(text) => map.insert(name.to_owned(), json!(text)),
            Err(_) => map.insert(
                format!("{name}_base64"),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
    }
    map.insert("error".to_owned(), error.map_or(Value::Null, error_json));
    value
}

fn error_json(err: &Reported) -> Value {
    json!({ "kind": err.kind, "message": err.message })
}
