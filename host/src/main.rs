fn main() -> std::process::ExitCode {
    // The confinement process of programs (`wharf_confine::confiner`) is wharf started
    // again: it serves on its standard input before anything of wharf's own runs.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__confine") {
        wharf_confine::serve();
    }
    wharf::cli::main()
}
