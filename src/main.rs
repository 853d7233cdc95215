//! The `spur` binary: parse the command line and hand over to `spur::cli`.

fn main() -> std::process::ExitCode {
    spur::cli::main()
}
