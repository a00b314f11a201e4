//! Line-protocol parsing throughput: this crate's parser next to the
//! `influxdb-line-protocol` crate (2.0.0), on three generated corpora.
//!
//! Both parsers read every name and every field value, so neither gets credit for lazy
//! work it skips. Run with `cargo bench --bench line_protocol`.
//!
//! The clock is the benchmark thread's CPU time (`/proc/thread-self/schedstat`): the build
//! machine is shared, and wall time there mostly measures the neighbours. Set
//! `LP_BENCH_WALL=1` for wall-clock time.

use std::hint::black_box;
use std::time::Instant;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use influx_tee::line_protocol::{lines, FieldValue, ParseOptions};

/// Thread CPU time in nanoseconds (or wall time with `LP_BENCH_WALL=1`).
struct ThreadTime {
    wall: bool,
    epoch: Instant,
}

impl ThreadTime {
    fn new() -> Self {
        let wall = std::env::var_os("LP_BENCH_WALL").is_some() || cpu_ns().is_none();
        ThreadTime {
            wall,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        if self.wall {
            return self.epoch.elapsed().as_nanos() as u64;
        }
        cpu_ns().unwrap_or(0)
    }
}

/// On-CPU time of this thread, from the first field of `/proc/thread-self/schedstat`.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

impl Measurement for ThreadTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        self.now()
    }
    fn end(&self, start: u64) -> u64 {
        self.now().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosFormatter
    }
}

/// Formats nanoseconds, and throughput in MiB/s.
struct NanosFormatter;

impl ValueFormatter for NanosFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else if typical < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (amount, unit) = match throughput {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => {
                (*b as f64 / (1024.0 * 1024.0), "MiB/s")
            }
            Throughput::Elements(e) => (*e as f64, "elem/s"),
            Throughput::Bits(b) => (*b as f64, "bit/s"),
            Throughput::ElementsAndBytes { bytes, .. } => {
                (*bytes as f64 / (1024.0 * 1024.0), "MiB/s")
            }
        };
        values.iter_mut().for_each(|v| *v = amount / (*v / 1e9));
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Deterministic pseudo-random numbers (no dependency, same corpus on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn float(&mut self) -> String {
        format!("{}.{:02}", self.below(1000), self.below(100))
    }
}

/// Roughly 30-byte lines: one tag, one or two numeric fields, a timestamp.
fn short_lines(target: usize) -> String {
    let mut rng = Rng(1);
    let mut out = String::with_capacity(target + 64);
    let mut ts = 1_700_000_000u64;
    while out.len() < target {
        ts += 1 + rng.below(3);
        match rng.below(3) {
            0 => out.push_str(&format!(
                "cpu,h=s{} v={} {ts}\n",
                rng.below(100),
                rng.float()
            )),
            1 => out.push_str(&format!(
                "mem,h=s{} u={}i {ts}\n",
                rng.below(100),
                rng.below(100_000)
            )),
            _ => out.push_str(&format!(
                "io,d=sd{} r={}i,w=1i\n",
                rng.below(10),
                rng.below(1000)
            )),
        }
    }
    out
}

/// Telegraf-like lines (~150 bytes): cpu, mem, disk, net and syslog measurements with
/// 5-10 fields of every type and nanosecond timestamps.
pub fn telegraf_lines(target: usize) -> String {
    let mut rng = Rng(2);
    let mut out = String::with_capacity(target + 512);
    let mut ts = 1_700_000_000_000_000_000u64;
    let hosts = ["web-01", "web-02", "db-primary", "cache-3", "worker-17"];
    while out.len() < target {
        ts += 10_000_000_000 + rng.below(1_000_000);
        let host = hosts[rng.below(hosts.len() as u64) as usize];
        let line = match rng.below(5) {
            0 => format!(
                "cpu,cpu=cpu{},host={host} usage_user={},usage_system={},usage_idle={},usage_iowait={},usage_steal=0 {ts}\n",
                rng.below(16),
                rng.float(),
                rng.float(),
                rng.float(),
                rng.float()
            ),
            1 => format!(
                "mem,host={host} active={}i,available={}i,available_percent={},buffered={}i,cached={}i,free={}i,used_percent={} {ts}\n",
                rng.below(1 << 34),
                rng.below(1 << 34),
                rng.float(),
                rng.below(1 << 30),
                rng.below(1 << 33),
                rng.below(1 << 33),
                rng.float()
            ),
            2 => format!(
                "disk,device=nvme0n1p{},fstype=ext4,host={host},mode=rw,path=/var/lib free={}i,inodes_free={}i,inodes_used={}i,total={}i,used={}i,used_percent={} {ts}\n",
                rng.below(4),
                rng.below(1 << 40),
                rng.below(1 << 24),
                rng.below(1 << 20),
                rng.below(1 << 41),
                rng.below(1 << 40),
                rng.float()
            ),
            3 => format!(
                "net,host={host},interface=eth{} bytes_recv={}i,bytes_sent={}i,drop_in=0i,err_in=0i,packets_recv={}i,packets_sent={}i,up=true {ts}\n",
                rng.below(2),
                rng.below(1 << 40),
                rng.below(1 << 40),
                rng.below(1 << 30),
                rng.below(1 << 30)
            ),
            _ => format!(
                "syslog,appname=sshd,facility=auth,host={host},severity=info facility_code=4i,message=\"Accepted publickey for deploy from 10.0.{}.{} port {}\",procid=\"{}\",severity_code=6i,timestamp={}i,version=1i {ts}\n",
                rng.below(256),
                rng.below(256),
                rng.below(65536),
                rng.below(99999),
                ts / 1000
            ),
        };
        out.push_str(&line);
    }
    out
}

/// Long lines full of escapes and quoted strings (several hundred bytes each).
fn escaped_lines(target: usize) -> String {
    let mut rng = Rng(3);
    let mut out = String::with_capacity(target + 2048);
    let mut ts = 1_700_000_000_000_000_000u64;
    while out.len() < target {
        ts += 1_000_000_000;
        let n = rng.below(1000);
        let mut line = format!(
            "http\\ requests\\,v2,path=/api/v2/write\\,query\\=x,user\\ agent=curl/8.{n}\\ (x86_64\\,\\ linux),region=eu\\ west\\=1 "
        );
        for f in 0..6 {
            if f > 0 {
                line.push(',');
            }
            line.push_str(&format!(
                "body\\ {f}=\"{{\\\"id\\\": {n}, \\\"msg\\\": \\\"a \\\\\\\"quoted\\\\\\\" word, and a comma = sign\\\"}} path C:\\\\temp\\\\{f}\""
            ));
        }
        line.push_str(&format!(
            ",latency\\=ms={},ok=true,code={}i {ts}\n",
            rng.float(),
            200 + rng.below(300)
        ));
        out.push_str(&line);
    }
    out
}

fn ours(input: &str) -> u64 {
    let mut sum = 0u64;
    for line in lines(input.as_bytes(), ParseOptions::default()) {
        let Ok(p) = line.result else { continue };
        sum = sum.wrapping_add(p.measurement().len() as u64);
        for (k, v) in p.tags() {
            sum = sum.wrapping_add((k.len() + v.len()) as u64);
        }
        for (k, v) in p.fields() {
            sum = sum.wrapping_add(k.len() as u64);
            sum = sum.wrapping_add(match v {
                FieldValue::Float(f) => f.to_bits(),
                FieldValue::Integer(i) => i as u64,
                FieldValue::Unsigned(u) => u,
                FieldValue::String(s) => s.len() as u64,
                FieldValue::Boolean(b) => u64::from(b),
            });
        }
        sum = sum.wrapping_add(p.timestamp().unwrap_or(0) as u64);
    }
    sum
}

fn theirs(input: &str) -> u64 {
    use influxdb_line_protocol::FieldValue as F;
    let mut sum = 0u64;
    for line in influxdb_line_protocol::parse_lines(input) {
        let Ok(p) = line else { continue };
        sum = sum.wrapping_add(p.series.measurement.len() as u64);
        if let Some(tags) = &p.series.tag_set {
            for (k, v) in tags {
                sum = sum.wrapping_add((k.len() + v.len()) as u64);
            }
        }
        for (k, v) in &p.field_set {
            sum = sum.wrapping_add(k.len() as u64);
            sum = sum.wrapping_add(match v {
                F::F64(f) => f.to_bits(),
                F::I64(i) => *i as u64,
                F::U64(u) => *u,
                F::String(s) => s.len() as u64,
                F::Boolean(b) => u64::from(*b),
            });
        }
        sum = sum.wrapping_add(p.timestamp.unwrap_or(0) as u64);
    }
    sum
}

fn bench(c: &mut Criterion<ThreadTime>) {
    const SIZE: usize = 4 << 20;
    let corpora = [
        ("short", short_lines(SIZE)),
        ("telegraf", telegraf_lines(SIZE)),
        ("escaped", escaped_lines(SIZE)),
    ];
    for (name, input) in &corpora {
        // Both parsers must accept everything and read the same number of lines.
        let n = input.lines().count();
        let ok_ours = lines(input.as_bytes(), ParseOptions::default())
            .filter(|l| l.result.is_ok())
            .count();
        let ok_theirs = influxdb_line_protocol::parse_lines(input)
            .filter(|l| l.is_ok())
            .count();
        assert_eq!(
            (ok_ours, ok_theirs),
            (n, n),
            "{name}: both parsers accept every line"
        );
        eprintln!(
            "{name}: {} lines, {:.0} bytes per line",
            n,
            input.len() as f64 / n as f64
        );

        let mut group = c.benchmark_group(format!("line_protocol/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("influx_tee", name), input, |b, i| {
            b.iter(|| ours(black_box(i)))
        });
        group.bench_with_input(
            BenchmarkId::new("influxdb_line_protocol", name),
            input,
            |b, i| b.iter(|| theirs(black_box(i))),
        );
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadTime::new());
    targets = bench
}
criterion_main!(benches);
