//! The `gateway` command line: parsing and dispatch.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

mod admin;
mod admin_args;
mod admin_tokens;
mod api_client;
mod fleet_args;

use crate::{
    config::{AttachMode, DEFAULT_TLS_PORTS, LogFlags, LogOutput},
    daemon::{self, RunOptions},
    replay,
    rules::{Expression, RuleError, sample},
    tls_version::TlsVersion,
    xdp::{ProgramLog, XdpFilter, XdpPolicy},
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// XDP-accelerated mTLS gateway.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(flatten)]
    api: api_client::ApiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: attach the XDP filter, terminate TLS, serve metrics and
    /// the admin API, follow the configuration.
    Run(Box<RunArgs>),
    /// Replace the admin API token of a stopped gateway's store and print the new one.
    RotateToken {
        /// The store's directory.
        #[arg(long, default_value = "/var/lib/gateway")]
        data_dir: PathBuf,
    },
    /// XDP filter tools.
    Xdp {
        #[command(subcommand)]
        command: XdpCommand,
    },
    /// Firewall rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

/// `gateway run`'s arguments.
#[derive(Args)]
struct RunArgs {
    /// Configuration file (TOML) instead of the store: no admin API, the file is followed.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The store's directory (created with a zone, CAs and a hostname on the first run).
    #[arg(long, default_value = "/var/lib/gateway")]
    data_dir: PathBuf,
    /// Admin API listen address (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:9101")]
    admin: SocketAddr,
    /// TLS listen address (repeatable; default 0.0.0.0:443 and [::]:443).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// The hostname created on the first run; its certificate answers clients without SNI.
    #[arg(long, default_value = "localhost")]
    default_hostname: String,
    /// Interface to attach the XDP filter to (overrides [xdp] interface).
    #[arg(long, short)]
    interface: Option<String>,
    /// Attach mode (overrides [xdp] mode).
    #[arg(long, value_enum)]
    mode: Option<AttachMode>,
    /// Metrics listen address (overrides [metrics] listen).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Log level of the XDP program itself.
    #[arg(long, value_enum, default_value_t = ProgramLog::Off)]
    xdp_log: ProgramLog,
    /// Serve the admin API in HTTPS with a certificate from the server CA
    /// (DATA_DIR/server-ca.pem verifies it).
    #[arg(long)]
    admin_tls: bool,
    /// Allow a plain-HTTP admin API on an address other than loopback (behind a TLS proxy).
    #[arg(long)]
    admin_insecure: bool,
    /// Hostnames the XDP filter's table holds, with the store (a
    /// configuration file sets [xdp] hostnames); default 1,000,000.
    #[arg(long)]
    xdp_hostnames: Option<u32>,
    /// Pin the XDP link and maps in this bpffs directory, so the filter keeps
    /// refusing across a stop and a restart reuses its state (overrides [xdp]
    /// pin_dir; `gateway xdp detach` removes them). E.g. /sys/fs/bpf/gateway.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    #[command(flatten)]
    fleet: fleet_args::FleetArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// `gateway run`'s log flags; each overrides its key of `[log]`.
#[derive(Args)]
struct LogArgs {
    /// Access log: one JSON line per request, to a file (reopened on SIGHUP) or `stdout`.
    #[arg(long, value_name = "FILE|stdout")]
    access_log: Option<LogOutput>,
    /// The access log's fields, comma-separated (default: all; see the README).
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...")]
    access_log_fields: Option<Vec<String>>,
    /// The fraction of requests the access log keeps (0.0 to 1.0).
    #[arg(long, value_name = "RATE")]
    access_log_sample_rate: Option<f64>,
    /// Handshake log: one JSON line per failed or refused handshake, to a file or `stdout`.
    #[arg(long, value_name = "FILE|stdout")]
    handshake_log: Option<LogOutput>,
    /// The handshake log's fields, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...")]
    handshake_log_fields: Option<Vec<String>>,
    /// The fraction of handshake events the handshake log keeps (0.0 to 1.0).
    #[arg(long, value_name = "RATE")]
    handshake_log_sample_rate: Option<f64>,
    /// Lines a second the handshake log gives XDP refusals at most; the rest
    /// are counted in one summary line a second (default 100).
    #[arg(long, value_name = "N")]
    handshake_log_xdp_lines: Option<u32>,
}

impl LogArgs {
    fn flags(self) -> LogFlags {
        LogFlags {
            access: self.access_log,
            access_fields: self.access_log_fields,
            access_sample_rate: self.access_log_sample_rate,
            handshake: self.handshake_log,
            handshake_fields: self.handshake_log_fields,
            handshake_sample_rate: self.handshake_log_sample_rate,
            xdp_lines_per_second: self.handshake_log_xdp_lines,
        }
    }
}

impl RunArgs {
    /// The daemon's options: the default listeners when none is given.
    fn options(self) -> anyhow::Result<RunOptions> {
        Ok(RunOptions {
            fleet: self.fleet.options()?,
            config: self.config,
            data_dir: self.data_dir,
            admin: self.admin,
            listen: if self.listen.is_empty() {
                vec![
                    SocketAddr::from(([0, 0, 0, 0], 443)),
                    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 443)),
                ]
            } else {
                self.listen
            },
            default_hostname: self.default_hostname,
            interface: self.interface,
            mode: self.mode,
            metrics: self.metrics,
            program_log: self.xdp_log,
            xdp_hostnames: self.xdp_hostnames,
            pin_dir: self.pin_dir,
            admin_tls: self.admin_tls,
            admin_insecure: self.admin_insecure,
            log: self.log.flags(),
        })
    }
}

#[derive(Subcommand)]
enum RulesCommand {
    #[command(flatten)]
    Api(admin::RulesApi),
    /// Parse and type-check an expression; print the error (with its position) if any.
    Check {
        /// The expression, e.g. 'http.host eq "api.example.com" and not cf.tls_client_auth.cert_verified'.
        expression: String,
    },
    /// Evaluate an expression on given field values and print true or false.
    Eval {
        /// The expression.
        expression: String,
        /// A field value as NAME=VALUE (repeatable); headers as http.request.headers=name:value.
        #[arg(long = "field", value_name = "NAME=VALUE")]
        fields: Vec<String>,
    },
}

#[derive(Subcommand)]
enum XdpCommand {
    /// Run pcap files through the real XDP program (BPF_PROG_TEST_RUN) and print
    /// one JSON object per packet: what the filter would do under a policy.
    Replay(ReplayArgs),
    /// Remove the pinned XDP filter (link and maps) a gateway run with
    /// --pin-dir leaves attached: it detaches once no gateway holds it.
    Detach {
        /// The pin directory.
        #[arg(long, default_value = crate::xdp::pins::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

/// `gateway xdp replay`'s arguments.
#[derive(Args)]
struct ReplayArgs {
    /// Zone minimum TLS version (1.0, 1.1, 1.2, 1.3).
    #[arg(long, default_value = "1.2")]
    zone_min_tls: TlsVersion,
    /// Minimum for ClientHellos without SNI (default: the zone's).
    #[arg(long)]
    no_sni_min_tls: Option<TlsVersion>,
    /// A hostname's own minimum, as HOST=VERSION (repeatable).
    #[arg(long, value_parser = parse_host_min)]
    host_min_tls: Vec<(String, TlsVersion)>,
    /// TLS port to inspect (repeatable; default 443 and 8443).
    #[arg(long)]
    port: Vec<u16>,
    /// Classic pcap files with Ethernet frames.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn parse_host_min(s: &str) -> Result<(String, TlsVersion), String> {
    let (host, version) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected HOST=VERSION, e.g. api.example.com=1.3"))?;
    crate::config::validate_hostname(host).map_err(|e| e.to_string())?;
    let version = version.parse::<TlsVersion>().map_err(|e| e.to_string())?;
    Ok((host.to_string(), version))
}

/// Runs the `gateway` command with the process's arguments.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Admin(command) => admin::run(&cli.api, command),
        Command::RotateToken { data_dir } => crate::control::rotate_token(&data_dir).map(|token| {
            println!("admin API token (shown once; keep it, the CLI reads it from GATEWAY_TOKEN): {token}")
        }),
        Command::Rules {
            command: RulesCommand::Api(command),
        } => admin::run_rules(&cli.api, command),
        Command::Run(args) => run(*args),
        Command::Rules {
            command: RulesCommand::Check { expression },
        } => Expression::compile(&expression)
            .map(|_| println!("ok"))
            .map_err(anyhow::Error::from),
        Command::Rules {
            command: RulesCommand::Eval { expression, fields },
        } => eval_rule(&expression, &fields),
        Command::Xdp {
            command: XdpCommand::Replay(args),
        } => replay_pcaps(args),
        Command::Xdp {
            command: XdpCommand::Detach { pin_dir },
        } => crate::xdp::pins::remove_all(&pin_dir).map(|n| {
            println!("removed {n} pins and {}", pin_dir.display());
        }),
    };
    let result = match result {
        Err(e) if e.downcast_ref::<RuleError>().is_some() => {
            eprintln!("gateway: invalid expression at {e}");
            return ExitCode::from(2);
        }
        other => other,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `gateway run`: the daemon on its own runtime.
fn run(args: RunArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(daemon::run(options))
}

/// `gateway rules eval`: prints whether the expression matches the fields.
fn eval_rule(expression: &str, fields: &[String]) -> anyhow::Result<()> {
    let expression = Expression::compile(expression)?;
    let request = sample::from_pairs(fields.iter().map(String::as_str))?;
    println!("{}", expression.matches(&request));
    Ok(())
}

/// `gateway xdp replay`: the pcap files through the real program under the policy given.
fn replay_pcaps(args: ReplayArgs) -> anyhow::Result<()> {
    let mut policy = XdpPolicy::uniform(args.zone_min_tls);
    policy.no_sni_min = args.no_sni_min_tls.unwrap_or(args.zone_min_tls);
    for (name, min) in args.host_min_tls {
        policy
            .set_host(&name, Some(min))
            .with_context(|| format!("--host-min-tls {name}"))?;
    }
    policy.ports = if args.port.is_empty() {
        DEFAULT_TLS_PORTS.into()
    } else {
        args.port.into_iter().collect()
    };
    let mut filter = XdpFilter::load(ProgramLog::Off)?;
    filter.apply(&policy)?;
    replay::replay(&mut filter, &args.files, std::io::stdout().lock())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// Clap's own checks of every command and argument, and the invocations
    /// where a global flag meets a subcommand's argument of the same name
    /// (`--ca` of `ca associate` once clashed with the API's CA flag, a panic
    /// when a user ran it).
    #[test]
    fn every_command_and_argument_is_well_formed() {
        super::Cli::command().debug_assert();
        for args in [
            &[
                "gateway",
                "ca",
                "associate",
                "--ca",
                "0f",
                "api.example.com",
            ][..],
            &["gateway", "--api-ca", "/tmp/ca.pem", "zone", "show"],
            &[
                "gateway",
                "token",
                "create",
                "--name",
                "x",
                "--permission",
                "API Tokens Read",
            ],
            &["gateway", "audit", "--since", "2026-12-01T00:00:00Z"],
        ] {
            super::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
