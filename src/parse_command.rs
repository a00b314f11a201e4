//! `influx-tee parse`: check a line-protocol file as the InfluxDB server would.

/// Arguments of `influx-tee parse`.
#[derive(clap::Args, Debug)]
pub struct ParseArgs {}

/// Runs the command and returns the process exit status.
pub fn run(_args: &ParseArgs) -> i32 {
    2
}
