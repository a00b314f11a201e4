//! `influx-tee spool stat|dump|replay`: look into a spool and ship it by hand.
//!
//! `stat` and `dump` only read, so they are safe on the spool of a running proxy;
//! `replay` takes the spool's lock, so it refuses to run beside one.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use crate::config::{Config, ServeArgs};

use super::format::{Entry, FRAME_HEADER};
use super::{now_ns, segment, Spool};

#[derive(clap::Args, Debug)]
pub struct SpoolArgs {
    #[command(subcommand)]
    pub command: SpoolCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SpoolCommand {
    /// Print segments, bytes, records, and the oldest record Kafka has not acknowledged, with its age.
    Stat(StatArgs),
    /// Print the spooled records (line protocol for `line` and `batch` formats).
    Dump(DumpArgs),
    /// Ship every record Kafka has not acknowledged, once, then exit (the proxy must be stopped).
    Replay(ReplayArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Also print entries Kafka already acknowledged that are still on disk.
    #[arg(long)]
    pub all: bool,
    /// Precede each record with a `#` comment: sequence number, tee-id, topic, key.
    #[arg(long)]
    pub meta: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Give up after this many seconds; what is left stays in the spool.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

/// Runs a `spool` subcommand; returns the process exit code.
pub fn run(args: SpoolArgs) -> i32 {
    let result = match args.command {
        SpoolCommand::Stat(stat) => load(&stat.serve).and_then(|c| print_stat(&c)),
        SpoolCommand::Dump(dump) => {
            load(&dump.serve).and_then(|c| print_dump(&c, dump.all, dump.meta))
        }
        SpoolCommand::Replay(replay) => {
            load(&replay.serve).and_then(|c| replay_once(&c, replay.timeout_seconds))
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("influx-tee spool: {error:#}");
            2
        }
    }
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    Ok(Config::load(args)?)
}

fn print_stat(config: &Config) -> anyhow::Result<i32> {
    let dir = &config.spool.dir;
    let stat = super::stat(dir)?;
    let instance = fs::read_to_string(dir.join("instance-id")).unwrap_or_default();
    // Undecodable entries are kept as raw bytes: read the file lossily, not as UTF-8.
    let dead_letters = fs::read(dir.join("dead-letter.lp"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| l.starts_with("# dead-letter"))
                .count()
        })
        .unwrap_or(0);
    let mut out = io::stdout().lock();
    writeln!(out, "spool            {}", dir.display())?;
    writeln!(out, "instance         {}", instance.trim())?;
    writeln!(out, "segments         {}", stat.segments)?;
    writeln!(out, "bytes            {}", stat.bytes)?;
    writeln!(
        out,
        "entries          {} ({} not acknowledged)",
        stat.entries, stat.unacked_entries
    )?;
    writeln!(
        out,
        "records          {} ({} not acknowledged)",
        stat.records, stat.unacked_records
    )?;
    writeln!(out, "committed seq    {}", stat.committed)?;
    writeln!(out, "last seq         {}", stat.last_seq)?;
    match stat.oldest_unacked {
        Some((seq, appended)) => writeln!(
            out,
            "oldest unacked   seq {seq}, appended at {appended} ns, age {:.3} s",
            (now_ns() - appended) as f64 / 1e9
        )?,
        None => writeln!(out, "oldest unacked   none")?,
    }
    writeln!(
        out,
        "damaged          {} bytes in {} regions (skipped)",
        stat.skipped_bytes, stat.skipped_regions
    )?;
    writeln!(
        out,
        "dead-lettered    {dead_letters} records ({})",
        dir.join("dead-letter.lp").display()
    )?;
    for s in &stat.per_segment {
        writeln!(
            out,
            "  {}  seq {}..={}  entries {}  records {}  bytes {}  damaged {}",
            s.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            s.first_seq,
            s.last_seq,
            s.entries,
            s.records,
            s.bytes,
            s.skipped_bytes
        )?;
    }
    Ok(0)
}

fn print_dump(config: &Config, all: bool, meta: bool) -> anyhow::Result<i32> {
    let dir = &config.spool.dir;
    let committed = super::read_committed(dir);
    let instance = fs::read_to_string(dir.join("instance-id")).unwrap_or_default();
    let instance = instance.trim();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut after = 0;
    for (_, path) in segment::list_segments(dir)? {
        let data = fs::read(&path)?;
        let scan = segment::scan(&data, after);
        if let Some(last) = scan.last_seq() {
            after = last;
        }
        for frame in scan
            .frames
            .iter()
            .filter(|f| all || f.header.seq > committed)
        {
            let payload = data[frame.offset + FRAME_HEADER
                ..frame.offset + FRAME_HEADER + frame.header.len as usize]
                .to_vec();
            let entry = match Entry::decode(&frame.header, payload) {
                Ok(entry) => entry,
                Err(error) => {
                    writeln!(out, "# seq={} {error}", frame.header.seq)?;
                    continue;
                }
            };
            for record in entry.records() {
                if meta {
                    let key = record.key.map(String::from_utf8_lossy).unwrap_or_default();
                    let tee_id = super::format::tee_id(instance, entry.seq, record.index);
                    let acked = if entry.seq <= committed { " acked" } else { "" };
                    writeln!(
                        out,
                        "# seq={} tee-id={tee_id} topic={} key={key}{acked}",
                        entry.seq, record.topic
                    )?;
                }
                out.write_all(record.value)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn replay_once(config: &Config, timeout_seconds: u64) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let spool = Spool::open(&config.spool, &prometheus::Registry::new(), None)?;
        let before = spool.committed();
        let last = spool.last_seq();
        spool.start_shipper(config.kafka.client_properties())?;
        let done = spool.wait_shipped(Duration::from_secs(timeout_seconds)).await;
        spool.close(Duration::from_secs(5)).await;
        let shipped = spool.committed().saturating_sub(before);
        let dead = spool.metrics().records_total.with_label_values(&["dead_lettered"]).get();
        println!("replayed {shipped} entries ({} records shipped, {dead} dead-lettered)", spool.metrics().records_total.with_label_values(&["shipped"]).get());
        if done {
            Ok(0)
        } else {
            eprintln!("influx-tee spool replay: {} entries still not acknowledged after {timeout_seconds} s", last.saturating_sub(spool.committed()));
            Ok(1)
        }
    })
}
