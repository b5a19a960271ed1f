//! Creating and recovering logs against the real binary when things go wrong: a `PUT` that
//! fills the disk (`507`) leaves no directory behind, a restart with the disk still full starts
//! and serves the existing logs, and a log that fails to open is left out, answering a clear
//! error, while every other log serves.

use super::process::{Server, all_commits, request};
use std::io::Write;
use std::path::Path;
use std::process::Command;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Grows `filler` until the disk is full, then gives back `leave` bytes.
fn fill(filler: &Path, leave: u64) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(filler).unwrap();
    let chunk = vec![7u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[7]).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_507_on_put_leaves_nothing_and_a_restart_on_a_full_disk_serves_every_log() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root (CI runs as root)");
    let _tmpfs = Tmpfs(mnt.clone());
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        "segment_bytes = 262144\ncommit_bytes_max = 65536\ndefault_shards = 1\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let data = mnt.join("data");
    let server = Server::start(&data, &args);
    let body = b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
    let (s, _, v) =
        request(&server.addr, "POST", "/v1/logs/keep/commits", Some("application/x-ndjson"), body)
            .unwrap();
    assert_eq!(s, 200, "{v}");
    let ids: Vec<String> =
        v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    // Room for a log's small files, not for its first segment.
    let filler = mnt.join("filler");
    fill(&filler, 64 * 1024);
    let logs = data.join("logs");
    let before = entries(&logs);
    let (s, _, v) = request(&server.addr, "PUT", "/v1/logs/stub", None, b"").unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (507, Some("disk_full")), "{v}");
    assert_eq!(entries(&logs), before, "the failed creation left something in logs/");
    // Restart with the disk full to the last byte.
    drop(server);
    fill(&filler, 0);
    let server = Server::start(&data, &args);
    let stored = all_commits(&server.addr, "keep", 1);
    assert!(ids.iter().all(|id| stored.contains_key(id)), "{stored:?}");
    let (s, _, v) = request(&server.addr, "GET", "/v1/logs/keep", None, b"").unwrap();
    assert_eq!(s, 200, "{v}");
    // Space back: writes and creations work again.
    std::fs::remove_file(&filler).unwrap();
    let (s, _, v) =
        request(&server.addr, "POST", "/v1/logs/keep/commits", Some("application/x-ndjson"), body)
            .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = request(&server.addr, "PUT", "/v1/logs/stub", None, b"").unwrap();
    assert_eq!(s, 201, "{v}");
}

#[test]
fn a_log_that_fails_to_open_is_left_out_and_every_other_log_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (s, _, v) =
        request(&server.addr, "PUT", "/v1/logs/good", None, b"{\"shards\": 1}").unwrap();
    assert_eq!(s, 201, "{v}");
    let (s, _, v) = request(
        &server.addr,
        "POST",
        "/v1/logs/good/commits",
        Some("application/x-ndjson"),
        b"{\"a\":1}\n",
    )
    .unwrap();
    assert_eq!(s, 200, "{v}");
    drop(server);
    let broken = dir.path().join("logs/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("log.meta"), b"not a shardlog metadata file").unwrap();
    // A creation a crash interrupted is no log, and is cleared away.
    std::fs::create_dir_all(dir.path().join("logs/.half.creating/shards")).unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(all_commits(&server.addr, "good", 1).len(), 1);
    let err = server.stderr.lock().unwrap().clone();
    assert!(err.contains("log failed to open") && err.contains("broken"), "{err}");
    assert!(!dir.path().join("logs/.half.creating").exists());
    // Its name answers a clear error, and nothing is created over it.
    let (s, _, v) = request(&server.addr, "PUT", "/v1/logs/broken", None, b"").unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("unavailable")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("failed to open"), "{v}");
    let (s, _, v) = request(
        &server.addr,
        "POST",
        "/v1/logs/broken/commits",
        Some("application/x-ndjson"),
        b"{\"a\":1}\n",
    )
    .unwrap();
    assert_eq!(s, 503, "{v}");
    // Reads say the same (its data is on disk: not 404).
    for path in ["/v1/logs/broken/timeline", "/v1/logs/broken/shards/0/commits"] {
        let (s, _, v) = request(&server.addr, "GET", path, None, b"").unwrap();
        assert_eq!((s, v["error"]["code"].as_str()), (503, Some("unavailable")), "{path}: {v}");
    }
    let meta = std::fs::read(broken.join("log.meta")).unwrap();
    assert_eq!(meta, b"not a shardlog metadata file");
}
