//! The `gateway` command.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
