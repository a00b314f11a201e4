//! Command line entry point. Everything of substance lives in the library.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "influx-tee", version, about = "InfluxDB write proxy that tees accepted points to Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a line-protocol file the way the InfluxDB server would parse it.
    Parse(influx_tee::parse_command::ParseArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Parse(args) => influx_tee::parse_command::run(&args),
    };
    std::process::exit(code);
}
