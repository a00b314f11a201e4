//! Lines without escapes allocate nothing: not to parse them, not to read every part.
//!
//! A counting global allocator counts allocations made by this test's thread while a
//! flag is set.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use influx_tee::line_protocol::{lines, FieldValue, ParseOptions, Precision};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    // Per thread, so tests running in parallel never count each other's allocations.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Parses `input` and reads every part of every point; returns the number of allocations
/// made and the number of points read.
fn allocations_while_reading(
    input: &[u8],
    opts: ParseOptions,
    series_key: &mut Vec<u8>,
) -> (usize, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let mut points = 0;
    let mut checksum = 0u64;
    for line in lines(input, opts) {
        let Ok(point) = &line.result else {
            COUNTING.with(|c| c.set(false));
            panic!("line {} was rejected", line.number);
        };
        points += 1;
        checksum += point.measurement().len() as u64;
        for (k, v) in point.tags() {
            checksum += (k.len() + v.len()) as u64;
        }
        for (k, v) in point.fields() {
            checksum += k.len() as u64;
            checksum = checksum.wrapping_add(match v {
                FieldValue::Float(f) => f.to_bits(),
                FieldValue::Integer(i) => i as u64,
                FieldValue::Unsigned(u) => u,
                FieldValue::String(s) => s.len() as u64,
                FieldValue::Boolean(b) => u64::from(b),
            });
        }
        checksum = checksum.wrapping_add(point.timestamp().unwrap_or(0) as u64);
        checksum += point.field_set_end() as u64;
        series_key.clear();
        point.write_series_key(series_key);
    }
    COUNTING.with(|c| c.set(false));
    std::hint::black_box(checksum);
    (ALLOCATIONS.with(Cell::get) - before, points)
}

#[test]
fn lines_without_escapes_allocate_nothing() {
    let many_fields: String = (0..40)
        .map(|i| format!("f{i}={i}i"))
        .collect::<Vec<_>>()
        .join(",");
    let body = format!(
        "# a comment\n\
         \n\
         cpu,cpu=cpu0,host=web-01 usage_user=12.5,usage_system=3.25,usage_idle=84.25 1700000000\n\
         mem,host=web-01 active=123456789i,available_percent=42.5,free=99u,ok=true,bad=F 1700000000\n\
         syslog,appname=sshd,host=web-01 message=\"Accepted publickey for deploy, port 22\",severity_code=6i\n\
         net,z=1,b=2,a=3 bytes=1e3,drops=-0,ratio=.5\n\
         \t  leading v=1 -1\n\
         tabs \tv=1 \t5\n\
         multi s=\"one\ntwo\",n=1i 7\n\
         quote a\"key=1,b=2\n\
         wide {many_fields} 9\n\
         unicode,日本=語 ü=\"ß\" 1\n"
    );
    let mut series_key = Vec::with_capacity(4096);
    for precision in [Precision::Nanosecond, Precision::Second] {
        let opts = ParseOptions::influxdb2(precision);
        let (allocations, points) =
            allocations_while_reading(body.as_bytes(), opts, &mut series_key);
        assert_eq!(points, 10);
        assert_eq!(
            allocations, 0,
            "parsing and reading lines without escapes allocated"
        );
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Escapes are unescaped into owned strings, so this must count something.
    let body = br#"m\ x,t\,k=v\=1 f\ k="a\"b" 1"#;
    let mut series_key = Vec::new();
    let (allocations, points) =
        allocations_while_reading(body, ParseOptions::default(), &mut series_key);
    assert_eq!(points, 1);
    assert!(allocations >= 4, "{allocations}");
}
