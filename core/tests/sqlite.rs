//! The `sqlite` entry of the default bundle: SQL against a database file in a mount, rows
//! as JSON lines or CSV; the file it writes is a real SQLite database.

mod common;

use megavisor_core::{Access, Mount, Output, Request, Runtime};
use serde_json::{Value, json};

fn sqlite(runtime: &Runtime, dir: &std::path::Path, access: Access, params: Value) -> Output {
    let entry = runtime
        .manifest()
        .entry("sqlite")
        .expect("the default bundle has sqlite");
    let request = Request::new("sqlite")
        .args(entry.render_arguments(&params).expect("params fit").args)
        .mount(Mount {
            host: dir.into(),
            guest: "/data".into(),
            access,
        });
    runtime.run(&request).expect("sqlite runs to an exit")
}

#[test]
fn statements_run_in_order_and_rows_print_as_json_lines_or_csv() {
    let runtime = common::default_runtime();
    let dir = tempfile::tempdir().unwrap();
    let sql = "create table t(id integer primary key, name text, score real, raw blob); \
        insert into t(name, score, raw) values ('ann', 3.5, X'00ff'), ('bob, \"jr\"', 5, null); \
        select * from t order by id";
    let out = sqlite(
        &runtime,
        dir.path(),
        Access::ReadWrite,
        json!({"database": "/data/t.db", "sql": sql}),
    );
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(
        rows,
        [
            json!({"id": 1, "name": "ann", "score": 3.5, "raw": "00ff"}),
            json!({"id": 2, "name": "bob, \"jr\"", "score": 5.0, "raw": null}),
        ]
    );
    let bytes = std::fs::read(dir.path().join("t.db")).unwrap();
    assert!(
        bytes.starts_with(b"SQLite format 3\0"),
        "a real database file"
    );

    let out = sqlite(
        &runtime,
        dir.path(),
        Access::ReadOnly,
        json!({"database": "/data/t.db", "sql": "select name, score * 2 as doubled from t", "csv": true, "read_only": true}),
    );
    assert_eq!(
        common::stdout(&out),
        "name,doubled\nann,7.0\n\"bob, \"\"jr\"\"\",10.0\n"
    );
}

#[test]
fn errors_exit_1_with_the_message() {
    let runtime = common::default_runtime();
    let dir = tempfile::tempdir().unwrap();
    let out = sqlite(
        &runtime,
        dir.path(),
        Access::ReadWrite,
        json!({"database": "/data/e.db", "sql": "select * from nope"}),
    );
    assert_eq!(out.exit_code, 1);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sqlite: no such table: nope\n"
    );
    let out = sqlite(
        &runtime,
        dir.path(),
        Access::ReadWrite,
        json!({"database": "/data/e.db", "sql": "create table x(a)", "read_only": true}),
    );
    assert_eq!(out.exit_code, 1, "a read-only open cannot create the file");
    let out = sqlite(
        &runtime,
        dir.path(),
        Access::ReadWrite,
        json!({"database": "/etc/passwd", "sql": "select 1"}),
    );
    assert_eq!(out.exit_code, 1, "nothing outside the mount is reachable");
}
