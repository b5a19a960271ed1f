//! `shardlog-bench`: end-to-end load generation and comparisons (built by the bench issue).

fn main() {
    eprintln!("shardlog-bench: not built yet");
    std::process::exit(2);
}
