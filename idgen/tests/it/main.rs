//! idgen's integration tests: property tests of the monotonic rule under arbitrary clocks.

mod tidy;

use idgen::{Generator, ManualClock, Ulid};
use proptest::prelude::*;

proptest! {
    /// Whatever the clock does (jumps, stalls, steps back), IDs strictly increase, never repeat,
    /// never carry a millisecond below the clock's at the time of a fresh millisecond, and every
    /// regression is counted.
    #[test]
    fn ids_strictly_increase_under_any_clock(
        steps in prop::collection::vec((0u64..2_000_000, 1u64..50), 1..200),
        seed in any::<u64>(),
    ) {
        let clock = ManualClock::new(0);
        let mut g = Generator::with_seed(clock.clone(), seed);
        let mut prev: Option<Ulid> = None;
        let mut expected_regressions = 0;
        let mut last_ms = 0u64;
        for (ms, n) in steps {
            clock.set_ms(ms);
            if prev.is_some() && ms < last_ms {
                expected_regressions += 1;
            }
            let r = g.reserve(n).unwrap();
            prop_assert!(r.first.timestamp_ms() >= ms);
            if prev.is_none() || ms > last_ms {
                prop_assert_eq!(r.first.timestamp_ms(), ms, "a fresh millisecond starts there");
            }
            for id in r.iter() {
                if let Some(p) = prev {
                    prop_assert!(id > p, "{id} after {p}");
                }
                prev = Some(id);
            }
            last_ms = prev.unwrap().timestamp_ms();
        }
        prop_assert_eq!(g.clock_regressions(), expected_regressions);
    }

    /// Text encoding round-trips and sorts like the integers.
    #[test]
    fn text_order_matches_integer_order(a in any::<u128>(), b in any::<u128>()) {
        let (ea, eb) = (idgen::encode(Ulid(a)), idgen::encode(Ulid(b)));
        prop_assert_eq!(idgen::parse(std::str::from_utf8(&ea).unwrap()), Some(Ulid(a)));
        prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
    }
}

#[test]
fn two_generators_with_one_clock_never_collide_in_practice() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut a = Generator::with_seed(clock.clone(), 1);
    let mut b = Generator::with_seed(clock, 2);
    let ra = a.reserve(100_000).unwrap();
    let rb = b.reserve(100_000).unwrap();
    let (lo, hi) = if ra.first < rb.first { (ra, rb) } else { (rb, ra) };
    assert!(lo.last() < hi.first, "ranges of different seeds overlap");
}
