//! The `updraft` command: the command line with the built-in operators only.

fn main() -> std::process::ExitCode {
    updraft::main_with(updraft::Registry::new())
}
