//! The `shardlog` binary: the HTTP service over the storage crate (built by the service issue).

fn main() {
    eprintln!("shardlog: the service is not built yet; see the storage crate and segtool");
    std::process::exit(2);
}
