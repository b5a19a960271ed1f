//! Model check of the published-length protocol (`storage::publish::PublishedLen`) with loom:
//! a writer fills bytes beyond the published length and publishes; readers read below what
//! they load. loom explores every interleaving and memory ordering the C++11 model allows and
//! its `UnsafeCell` flags any read that races with a write. Run with
//! `cargo test -p storage --features loom --test loom --release`.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use storage::publish::PublishedLen;

const LEN: usize = 4;

/// The segment bytes as the model sees them: one cell per byte so loom tracks each access.
struct Bytes {
    cells: Vec<UnsafeCell<u8>>,
    published: PublishedLen,
}

#[test]
fn readers_see_whole_batches_and_never_race_the_writer() {
    loom::model(|| {
        let seg = Arc::new(Bytes {
            cells: (0..LEN).map(|_| UnsafeCell::new(0)).collect(),
            published: PublishedLen::new(0),
        });
        let writer = {
            let seg = Arc::clone(&seg);
            thread::spawn(move || {
                // Two batches: bytes 0..2 then 2..4, each published with one store.
                for (start, end) in [(0, 2), (2, 4)] {
                    for i in start..end {
                        seg.cells[i].with_mut(|p| {
                            // SAFETY: (model) the writer only writes at or beyond the published
                            // length, which readers never read; loom verifies this.
                            #[allow(unsafe_code)]
                            unsafe {
                                *p = (i + 1) as u8
                            }
                        });
                    }
                    seg.published.publish(end);
                }
            })
        };
        let reader = {
            let seg = Arc::clone(&seg);
            thread::spawn(move || {
                let n = seg.published.load();
                assert!(n == 0 || n == 2 || n == 4, "only whole batches are published");
                for i in 0..n {
                    let v = seg.cells[i].with(|p| {
                        // SAFETY: (model) `i < published`, loaded with Acquire after the writer's
                        // Release store; loom flags the read if that does not order it.
                        #[allow(unsafe_code)]
                        unsafe {
                            *p
                        }
                    });
                    assert_eq!(v, (i + 1) as u8, "a published byte is always the written one");
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
    });
}
