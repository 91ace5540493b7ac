//! Turning an LLM's (or any caller's) JSON arguments into argv and stdin, never a shell.
//!
//! Each property of an entry's `arguments` schema carries an `x-argv` hint:
//!
//! - `{"flag": "-l"}` on a boolean: the flag is emitted when the value is `true`;
//! - `{"option": "-n"}` on a string or number: emitted as `-n VALUE`;
//! - `{"option": "--input", "json": true}` on a value of any JSON type: emitted as
//!   `--input JSON`, the value in compact JSON;
//! - `{"positional": K}` on a string, number or array of strings: emitted after all flags and
//!   options, ordered by `K`, arrays expanded;
//! - `{"stdin": true}` on a string: fed to the tool's stdin instead of argv.
//!
//! Values are checked against the property's `type` and `enum`, unknown properties and
//! missing `required` ones are refused. If a positional value starts with `-`, a `--` is
//! emitted before the positionals so it cannot be read as an option (argument injection),
//! unless the schema sets `"x-argv-no-separator": true` for tools that do not parse options.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::manifest::Entry;

/// Arguments rendered for one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedArguments {
    /// Arguments after argv\[0\].
    pub args: Vec<String>,
    /// Bytes for stdin, when a `stdin` property was given.
    pub stdin: Option<Vec<u8>>,
}

impl Entry {
    /// Checks `params` against this entry's argument schema and renders them.
    pub fn render_arguments(&self, params: &Value) -> Result<RenderedArguments> {
        let empty = Map::new();
        let params = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(self.bad(format!("arguments must be a JSON object, not {other}"))),
        };
        let properties = self
            .arguments
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if let Some(required) = self.arguments.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if params.get(name).is_none_or(Value::is_null) {
                    return Err(self.bad(format!("missing required argument {name:?}")));
                }
            }
        }
        let mut rendered = RenderedArguments::default();
        let mut positionals: Vec<(u64, Vec<String>)> = Vec::new();
        for (name, value) in params {
            if value.is_null() {
                continue;
            }
            let Some(schema) = properties.get(name) else {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                return Err(self.bad(format!(
                    "unknown argument {name:?} (expected one of: {})",
                    known.join(", ")
                )));
            };
            let hint = schema
                .get("x-argv")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::InvalidManifest {
                    file: self.name.clone().into(),
                    reason: format!("property {name:?} has no x-argv hint"),
                })?;
            let as_json = hint.get("json").and_then(Value::as_bool) == Some(true);
            if !as_json {
                self.check_type(name, schema, value)?;
            }
            if let (true, Some(option)) = (as_json, hint.get("option").and_then(Value::as_str)) {
                rendered.args.push(option.to_owned());
                rendered.args.push(value.to_string());
            } else if let Some(flag) = hint.get("flag").and_then(Value::as_str) {
                if value.as_bool() == Some(true) {
                    rendered.args.push(flag.to_owned());
                }
            } else if let Some(option) = hint.get("option").and_then(Value::as_str) {
                rendered.args.push(option.to_owned());
                rendered.args.push(scalar(value));
            } else if let Some(position) = hint.get("positional").and_then(Value::as_u64) {
                let values = match value {
                    Value::Array(items) => items.iter().map(scalar).collect(),
                    other => vec![scalar(other)],
                };
                positionals.push((position, values));
            } else if hint.get("stdin").and_then(Value::as_bool) == Some(true) {
                rendered.stdin = Some(scalar(value).into_bytes());
            }
        }
        positionals.sort_by_key(|(position, _)| *position);
        let values: Vec<String> = positionals.into_iter().flat_map(|(_, v)| v).collect();
        let no_separator = self
            .arguments
            .get("x-argv-no-separator")
            .and_then(Value::as_bool)
            == Some(true);
        if !no_separator && values.iter().any(|v| v.starts_with('-')) {
            rendered.args.push("--".to_owned());
        }
        rendered.args.extend(values);
        Ok(rendered)
    }

    fn check_type(&self, name: &str, schema: &Value, value: &Value) -> Result<()> {
        let expected = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string");
        let fits = match expected {
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value
                .as_array()
                .is_some_and(|items| items.iter().all(|i| i.is_string() || i.is_number())),
            _ => false,
        };
        if !fits {
            return Err(self.bad(format!(
                "argument {name:?} must be of type {expected}, got {value}"
            )));
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(self.bad(format!(
                "argument {name:?} must be one of {}",
                Value::Array(allowed.clone())
            )));
        }
        Ok(())
    }

    fn bad(&self, message: String) -> Error {
        Error::BadRequest(format!("{}: {message}", self.name))
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::manifest::EntryLimits;

    fn grep() -> Entry {
        Entry {
            name: "grep".into(),
            entry: "grep".into(),
            module: "megabin".into(),
            export: None,
            description: "search".into(),
            arguments: json!({
                "type": "object",
                "required": ["pattern"],
                "properties": {
                    "ignore_case": {"type": "boolean", "x-argv": {"flag": "-i"}},
                    "max": {"type": "integer", "x-argv": {"option": "-m"}},
                    "mode": {"type": "string", "enum": ["basic", "extended"], "x-argv": {"option": "--mode"}},
                    "pattern": {"type": "string", "x-argv": {"positional": 0}},
                    "files": {"type": "array", "items": {"type": "string"}, "x-argv": {"positional": 1}},
                    "stdin": {"type": "string", "x-argv": {"stdin": true}}
                }
            }),
            capabilities: vec![],
            limits: EntryLimits {
                memory_bytes: 1,
                timeout_ms: 1,
            },
            originals: Default::default(),
            native_fallback: None,
        }
    }

    #[test]
    fn renders_flags_options_positionals_and_stdin() {
        let r = grep()
            .render_arguments(&json!({"pattern": "a.c", "ignore_case": true, "max": 3, "files": ["x", "y"], "stdin": "abc\n"}))
            .unwrap();
        assert_eq!(r.args, ["-i", "-m", "3", "a.c", "x", "y"]);
        assert_eq!(r.stdin.as_deref(), Some(&b"abc\n"[..]));
        let r = grep()
            .render_arguments(&json!({"pattern": "p", "ignore_case": false}))
            .unwrap();
        assert_eq!(r.args, ["p"]);
    }

    #[test]
    fn a_json_option_takes_any_value_as_compact_json() {
        let mut entry = grep();
        entry.arguments["properties"]["input"] =
            json!({"x-argv": {"option": "--input", "json": true}});
        for (input, rendered) in [
            (json!({"a": [1, "x"]}), r#"{"a":[1,"x"]}"#),
            (json!("text"), r#""text""#),
            (json!(3.5), "3.5"),
        ] {
            let r = entry
                .render_arguments(&json!({"pattern": "p", "input": input}))
                .unwrap();
            assert_eq!(r.args, ["--input", rendered, "p"]);
        }
    }

    #[test]
    fn option_like_positionals_come_after_a_separator() {
        let r = grep().render_arguments(&json!({"pattern": "-rf"})).unwrap();
        assert_eq!(r.args, ["--", "-rf"]);
        let mut echo = grep();
        echo.arguments["x-argv-no-separator"] = json!(true);
        assert_eq!(
            echo.render_arguments(&json!({"pattern": "-n"}))
                .unwrap()
                .args,
            ["-n"]
        );
    }

    #[test]
    fn refuses_what_the_schema_does_not_allow() {
        let e = grep();
        for (params, needle) in [
            (json!({}), "missing required argument \"pattern\""),
            (
                json!({"pattern": "p", "shell": "rm -rf /"}),
                "unknown argument \"shell\"",
            ),
            (json!({"pattern": 7}), "must be of type string"),
            (
                json!({"pattern": "p", "max": "3; reboot"}),
                "must be of type integer",
            ),
            (json!({"pattern": "p", "mode": "perl"}), "must be one of"),
            (json!(["p"]), "must be a JSON object"),
        ] {
            let err = e.render_arguments(&params).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::BadRequest);
            assert!(err.to_string().contains(needle), "{params}: {err}");
        }
    }
}
