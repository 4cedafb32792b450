//! The `gateway` command, built with this crate so that its tests always run
//! the current code (`CARGO_BIN_EXE_gateway-under-test`).

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
