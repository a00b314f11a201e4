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
    /// Read a gateway token from stdin and print its SHA-256, for `[[gateway.tokens]] sha256`.
    HashToken,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Parse(args) => influx_tee::parse_command::run(&args),
        Command::HashToken => influx_tee::http::gateway_auth::hash_token_command(),
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
    let mut config = config;
    raise_open_files_limit(&mut config);
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

/// Raises the soft open-files limit to the hard one and keeps `max_connections` under
/// it, leaving room for the admin listener, the upstream pool, Kafka and the spool.
fn raise_open_files_limit(config: &mut Config) {
    const RESERVED: usize = 512;
    match influx_tee::http::serve::raise_nofile_limit() {
        Ok((before, after)) => {
            tracing::info!(soft_before = before, soft = after, "open files limit");
            let room = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .saturating_sub(RESERVED + config.http.admin_max_connections);
            if config.http.max_connections > room {
                tracing::warn!(
                    configured = config.http.max_connections,
                    max_connections = room,
                    open_files_limit = after,
                    "max_connections lowered to fit the open files limit"
                );
                config.http.max_connections = room.max(1);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read or raise the open files limit"),
    }
}
