//! Command line entry point. Everything of substance lives in the library.
use clap::{Parser, Subcommand};
use influx_tee::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "influx-tee",
    version,
    about = "InfluxDB write proxy that tees accepted points to Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start, so the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Check a line-protocol file the way the InfluxDB server would parse it.
    Parse(influx_tee::parse_command::ParseArgs),
    /// Inspect or ship the durable spool: `stat`, `dump`, `replay`.
    Spool(influx_tee::spool::command::SpoolArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Parse(args) => influx_tee::parse_command::run(&args),
        Command::Spool(args) => {
            influx_tee::server::init_logging(&influx_tee::config::LogConfig::default());
            influx_tee::spool::command::run(args)
        }
        Command::Serve(args) => match serve(args) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("influx-tee: {error:#}");
                2
            }
        },
    };
    std::process::exit(code);
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    if args.print_config {
        print!("{}", config.to_masked_toml());
        return Ok(());
    }
    influx_tee::server::init_logging(&config.log);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen).await?;
        influx_tee::server::run(
            listener,
            admin,
            config,
            influx_tee::server::shutdown_signal(),
        )
        .await
    })
}
