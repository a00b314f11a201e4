//! `influx-tee parse`: output formats and exit statuses.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/line_protocol")
        .join(name)
}

fn parse(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .arg("parse")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("influx-tee runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("influx-tee finishes")
}

fn stdout_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn json_lists_points_and_errors_in_order() {
    let path = fixture("mixed.lp");
    let out = parse(&[path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "an invalid line exits 1");
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 4, "comment and blank lines print nothing");
    assert_eq!(
        lines[0],
        serde_json::json!({
            "line": 2,
            "measurement": "cpu",
            "tags": [{"key": "host", "value": "a"}, {"key": "region", "value": "us west"}],
            "fields": [
                {"key": "usage", "type": "float", "value": 12.5},
                {"key": "count", "type": "integer", "value": 3},
                {"key": "big", "type": "unsigned", "value": 18446744073709551615u64},
                {"key": "ok", "type": "boolean", "value": true},
                {"key": "msg", "type": "string", "value": "say \"hi\""}
            ],
            "time": 1700000000
        })
    );
    assert_eq!(lines[1]["time"], serde_json::Value::Null);
    assert_eq!(
        lines[2],
        serde_json::json!({"line": 5, "error": "unable to parse 'cpu value=1.1.1': invalid number"})
    );
    assert_eq!(lines[3]["line"], 6);
    assert_eq!(lines[3]["time"], -5);
    // Integers are printed exactly, not through a float.
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"value\":18446744073709551615}"));
}

#[test]
fn valid_file_exits_zero() {
    let path = fixture("valid.lp");
    let out = parse(&[path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_lines(&out).len(), 2);
}

#[test]
fn stdin_default_time_and_precision() {
    let out = parse(
        &["--precision", "s", "--default-time", "1999999999", "-"],
        Some(b"a v=1\nb v=2 3\n"),
    );
    assert_eq!(out.status.code(), Some(0));
    let lines = stdout_lines(&out);
    // The default time is truncated to the precision, as the server truncates its clock.
    assert_eq!(lines[0]["time"], 1_000_000_000);
    assert_eq!(lines[1]["time"], 3_000_000_000i64);

    let out = parse(&["--precision", "h"], Some(b"a v=1 2\n"));
    assert_eq!(stdout_lines(&out)[0]["time"], 7_200_000_000_000i64);
}

#[test]
fn no_unsigned_rejects_u_suffix() {
    let out = parse(&["--no-unsigned"], Some(b"a v=1u\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout_lines(&out)[0]["error"],
        "unable to parse 'a v=1u': invalid number"
    );
}

#[test]
fn stats_prints_one_summary_line() {
    let path = fixture("mixed.lp");
    let out = parse(&["--format", "stats", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    for part in [
        "lines=4", "points=3", "errors=1", "bytes=", "seconds=", "MB/s=",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
}

#[test]
fn usage_and_io_errors_exit_two() {
    let out = parse(&["/nonexistent/file.lp"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.lp"));
    assert_eq!(
        parse(&["--precision", "d"], Some(b"")).status.code(),
        Some(2)
    );
    assert_eq!(
        parse(&["--format", "xml"], Some(b"")).status.code(),
        Some(2)
    );
    assert_eq!(
        parse(&["--default-time", "soon"], Some(b"")).status.code(),
        Some(2)
    );
}

#[test]
fn empty_input_is_valid() {
    let out = parse(&[], Some(b"\n# nothing\n"));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}
