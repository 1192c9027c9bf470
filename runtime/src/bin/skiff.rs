fn main() {
    std::process::exit(skiff_runtime::cli::main());
}
