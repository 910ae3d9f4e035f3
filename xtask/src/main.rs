fn main() {
    std::process::exit(xtask::main());
}
