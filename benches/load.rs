//! Load generator for the proxy-vs-direct comparison driven by `benches/load.sh`.
//!
//! N writers each post M batches of Telegraf-like line protocol to one write URL
//! and the run reports points/s, MB/s and per-request latency percentiles.
//! Every body is generated before the clock starts, so only the HTTP round
//! trips are measured. The run is bounded: a fixed number of requests, each
//! with a timeout, and only loopback targets are accepted.
//!
//! ```sh
//! cargo bench --bench load -- --url 'http://127.0.0.1:18086/write?db=load' --writers 4 --batches 50
//! ```
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[derive(Parser, Debug)]
#[command(about = "Post line-protocol batches concurrently and report throughput and latency")]
struct Args {
    /// Full write URL, e.g. http://127.0.0.1:18087/write?db=load or .../api/v2/write?org=o&bucket=b.
    #[arg(long, default_value = "http://127.0.0.1:18087/write?db=load")]
    url: String,
    /// Concurrent writers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    writers: u32,
    /// Measured batches per writer.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batches: u32,
    /// Lines (points) per batch.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    lines: u32,
    /// Unmeasured batches per writer sent first (connection setup, upstream caches).
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Name printed with the results.
    #[arg(long, default_value = "load")]
    label: String,
    /// Also print the summary as one JSON line (for scripts).
    #[arg(long)]
    json: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Upper bound on pre-generated body memory in MiB (guards against huge flag values).
    #[arg(long, default_value_t = 2048)]
    max_memory_mib: u64,
    /// Passed by `cargo bench` to every bench binary. Without it (`cargo test
    /// --all-targets` runs bench binaries too) the generator checks its own output
    /// instead of loading a server.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Distinct hosts in the generated data: enough to look like a fleet, few
/// enough (≈ 2,000 series) not to turn the bench into a cardinality test.
const HOSTS: u64 = 200;

/// Small deterministic PRNG (xorshift64*) so runs are reproducible and
/// generation stays cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A float in [0, scale) with two decimals, like typical gauge readings.
    fn gauge(&mut self, scale: u64) -> f64 {
        (self.below(scale * 100)) as f64 / 100.0
    }
}

/// Appends one ~150-byte Telegraf-like line (cpu, mem, disk or net) to `out`.
/// `ts` is unique per point, so no point overwrites another.
fn push_line(out: &mut String, rng: &mut Rng, seq: u64, ts: u64) {
    let host = seq % HOSTS;
    let region = ["eu-west-1", "us-east-1", "ap-south-1"][(host % 3) as usize];
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = match (seq / HOSTS) % 4 {
        0 => write!(
            out,
            "cpu,host=host-{host:03},region={region},cpu=cpu{} usage_user={},usage_system={},usage_idle={},usage_iowait={},usage_irq={},usage_steal=0",
            rng.below(4),
            rng.gauge(60),
            rng.gauge(20),
            rng.gauge(100),
            rng.gauge(5),
            rng.gauge(1),
        ),
        1 => write!(
            out,
            "mem,host=host-{host:03},region={region} total=17179869184i,used={}i,free={}i,cached={}i,used_percent={},available_percent={}",
            rng.below(17_179_869_184),
            rng.below(8_589_934_592),
            rng.below(4_294_967_296),
            rng.gauge(100),
            rng.gauge(100),
        ),
        2 => write!(
            out,
            "disk,host=host-{host:03},region={region},path=/data{},fstype=ext4 total=499963174912i,used={}i,used_percent={},inodes_used={}i,mode=\"rw\",ro=false",
            rng.below(2),
            rng.below(499_963_174_912),
            rng.gauge(100),
            rng.below(30_000_000),
        ),
        _ => write!(
            out,
            "net,host=host-{host:03},region={region},interface=eth{} bytes_sent={}i,bytes_recv={}i,packets_sent={}i,packets_recv={}i,err_in=0i,up=true",
            rng.below(2),
            rng.next() >> 20,
            rng.next() >> 20,
            rng.next() >> 30,
            rng.next() >> 30,
        ),
    };
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(ts));
    out.push('\n');
}

/// Generates `count` batches of `lines` points whose timestamps start at `first_ts`
/// and step by 1 ns, so the batches of all writers never share a timestamp.
fn generate(count: u32, lines: u32, first_ts: u64, seed: u64) -> Vec<Bytes> {
    let mut rng = Rng(seed | 1);
    let mut seq = 0u64;
    (0..count)
        .map(|_| {
            let mut body = String::with_capacity(lines as usize * 170);
            for _ in 0..lines {
                push_line(&mut body, &mut rng, seq, first_ts + seq);
                seq += 1;
            }
            Bytes::from(body)
        })
        .collect()
}

/// Refuses anything but loopback: this tool is a load generator and must not
/// be pointed at shared infrastructure by accident.
fn check_loopback(uri: &Uri) -> Result<()> {
    ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs are supported: {uri}"
    );
    let host = uri.host().context("URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(loopback, "refusing non-loopback target {host}");
    Ok(())
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Posts one batch and returns its latency; any non-2xx answer is an error.
async fn post(client: &HttpClient, uri: &Uri, body: Bytes, timeout: Duration) -> Result<Duration> {
    let request = Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body))?;
    let started = Instant::now();
    let exchange = async {
        let response = client.request(request).await.context("request failed")?;
        let status = response.status();
        // Read the whole answer so the connection goes back to the pool.
        let answer = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        anyhow::Ok((status, answer))
    };
    let (status, answer) = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("no answer within {timeout:?}"))??;
    let elapsed = started.elapsed();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(500)]).into_owned();
        bail!("{uri} answered {status}: {text}");
    }
    Ok(elapsed)
}

/// Sends every batch of one writer in order, returning the measured latencies.
async fn run_writer(
    client: HttpClient,
    uri: Uri,
    batches: Vec<Bytes>,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(batches.len());
    for body in batches {
        latencies.push(post(&client, &uri, body, timeout).await?);
    }
    Ok(latencies)
}

/// Runs every writer concurrently over its batches; returns all latencies and the wall time.
async fn run_phase(
    client: &HttpClient,
    uri: &Uri,
    per_writer: Vec<Vec<Bytes>>,
    timeout: Duration,
) -> Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let tasks: Vec<_> = per_writer
        .into_iter()
        .map(|batches| tokio::spawn(run_writer(client.clone(), uri.clone(), batches, timeout)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("writer task panicked")??);
    }
    Ok((latencies, started.elapsed()))
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// Every generated line must be one the InfluxDB server stores, or the bench would
/// measure error answers.
fn check_generated_bodies() -> Result<()> {
    let options = influx_tee::line_protocol::ParseOptions::influxdb1(
        influx_tee::line_protocol::Precision::Nanosecond,
    );
    let bodies = generate(3, 500, 1_700_000_000_000_000_000, 7);
    let mut points = 0;
    for body in &bodies {
        for line in influx_tee::line_protocol::lines(body, options) {
            line.result
                .map_err(|e| anyhow::anyhow!("generated line {}: {e}", line.number))?;
            points += 1;
        }
    }
    ensure!(
        points == 1500,
        "expected 1500 generated points, parsed {points}"
    );
    println!("load generator self-check: {points} generated points parse as InfluxDB would");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.bench {
        return check_generated_bodies();
    }
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("bad --url {}", args.url))?;
    check_loopback(&uri)?;

    let writers = args.writers as usize;
    let per_writer_batches = args.warmup + args.batches;
    let points_per_writer = u64::from(per_writer_batches) * u64::from(args.lines);
    let estimated_mib = writers as u64 * points_per_writer * 160 / (1 << 20);
    ensure!(
        estimated_mib <= args.max_memory_mib,
        "the bodies would take ~{estimated_mib} MiB (> --max-memory-mib {})",
        args.max_memory_mib
    );

    // Timestamps start at "now" so they are unique across runs too (a run of
    // even 10M points spans only 10 ms of nanoseconds); each writer gets its own range.
    let base_ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let mut warmup = Vec::with_capacity(writers);
    let mut measured = Vec::with_capacity(writers);
    for w in 0..writers as u64 {
        let mut bodies = generate(
            per_writer_batches,
            args.lines,
            base_ts + w * points_per_writer,
            w + 1,
        );
        measured.push(bodies.split_off(args.warmup as usize));
        warmup.push(bodies);
    }
    let measured_bytes: u64 = measured.iter().flatten().map(|b| b.len() as u64).sum();
    let points = writers as u64 * u64::from(args.batches) * u64::from(args.lines);

    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(writers)
        .build_http();
    let timeout = Duration::from_secs(args.timeout_secs);

    if args.warmup > 0 {
        run_phase(&client, &uri, warmup, timeout)
            .await
            .context("warm-up")?;
    }
    let (mut latencies, wall) = run_phase(&client, &uri, measured, timeout).await?;
    latencies.sort_unstable();

    let seconds = wall.as_secs_f64();
    let points_per_sec = points as f64 / seconds;
    let mb_per_sec = measured_bytes as f64 / 1e6 / seconds;
    let p50 = percentile_ms(&latencies, 50.0);
    let p99 = percentile_ms(&latencies, 99.0);
    let max = percentile_ms(&latencies, 100.0);
    println!(
        "{}: writers={} batches={} lines={} points={} wall={:.2}s points/s={:.0} MB/s={:.1} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        args.label, args.writers, latencies.len(), args.lines, points, seconds, points_per_sec, mb_per_sec, p50, p99, max
    );
    if args.json {
        let summary = serde_json::json!({
            "label": args.label,
            "url": args.url,
            "writers": args.writers,
            "batches": latencies.len(),
            "lines_per_batch": args.lines,
            "points": points,
            "bytes": measured_bytes,
            "seconds": seconds,
            "points_per_sec": points_per_sec,
            "mb_per_sec": mb_per_sec,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
        });
        println!("{summary}");
    }
    Ok(())
}
