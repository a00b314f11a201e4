//! Memory stays bounded under a burst of large writes: the process-wide body budget
//! (`max_inflight_bytes`) makes writes past it wait, then answer 503 with
//! `Retry-After`, and the real binary's peak RSS stays under a bound while every write
//! that got its 204 is in InfluxDB and Kafka.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `VmHWM` (peak) and `VmRSS` of a process, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_past_the_body_budget_gets_503_and_memory_stays_bounded() {
    require_stack().await;
    let db = unique("mem_budget");
    create_database(&db).await;
    let topic = format!("{db}_t");
    let dir = std::env::temp_dir().join(unique("influx-tee-mem"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let admin = free_port();
    let config = dir.join("influx-tee.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             max_body_bytes = 2097152\nmax_inflight_bytes = 4194304\ninflight_wait_ms = 50\n\
             [upstream]\nurl = \"{}\"\n[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
             [spool]\ndir = \"{}\"\n",
            influxdb_url(),
            kafka_brokers(),
            dir.join("spool").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http().get(format!("{base}/ping")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the proxy did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ready_peak, ready_rss) = memory_of(child.id());

    // 24 writes of 20,000 lines (~1 MiB) each, all at once: four fit the budget.
    const WRITES: usize = 24;
    const LINES: usize = 20_000;
    let t0 = now_ns();
    let mut tasks = Vec::new();
    for w in 0..WRITES {
        let url = format!("{base}/write?db={db}");
        let mut body = String::with_capacity(LINES * 52);
        for i in 0..LINES {
            body.push_str(&format!(
                "burst,writer=w{w:02},host=h{:03} value={i}i {}\n",
                i % 100,
                t0 + i as i64
            ));
        }
        tasks.push(tokio::spawn(async move {
            let answer = http().post(url).body(body).send().await.unwrap();
            let status = answer.status().as_u16();
            let retry_after = answer.headers().get("retry-after").cloned();
            let text = answer.text().await.unwrap();
            (status, retry_after, text)
        }));
    }
    let mut stored_writes = 0;
    let mut refused = 0;
    for task in tasks {
        let (status, retry_after, text) = task.await.unwrap();
        match status {
            204 => stored_writes += 1,
            503 => {
                assert!(retry_after.is_some(), "503 without Retry-After");
                assert!(
                    text.contains("\"error\"") && text.contains("in memory"),
                    "{text}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    let (burst_peak, _) = memory_of(child.id());
    assert!(refused > 0, "the budget never refused a write");
    assert!(stored_writes > 0, "the budget refused every write");

    // Every acknowledged point is stored and teed; nothing of a refused write is.
    let expected = stored_writes * LINES;
    let records = kafka_records(&topic, expected, Duration::from_secs(60)).await;
    assert_eq!(records.len(), expected);
    assert_eq!(
        influx_count_at(&influxdb_url(), None, &db, "burst").await,
        expected as i64
    );
    let metrics = http()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "influx_tee_write_budget_refused_total{{endpoint=\"v1\"}} {refused}"
        )),
        "{metrics}"
    );

    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, settled_rss) = memory_of(child.id());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "ready: RSS {:.1} MiB (peak {:.1}); burst of {WRITES} x {LINES} lines: peak {:.1} MiB; \
         10 s later RSS {:.1} MiB; {stored_writes} stored, {refused} refused",
        mib(ready_rss),
        mib(ready_peak),
        mib(burst_peak),
        mib(settled_rss)
    );
    // Four writes in flight at most: each holds its body, its parsed lines and its
    // records. Without the budget all 24 would be in memory at once.
    assert!(
        burst_peak < ready_peak + 160 * (1 << 20),
        "peak RSS grew by {:.1} MiB",
        mib(burst_peak - ready_peak)
    );
    assert!(settled_rss < ready_rss + 160 * (1 << 20));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
