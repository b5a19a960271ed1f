//! Unit tests of the generator rule, the text codec and the time helpers.

use crate::*;

#[test]
fn same_millisecond_increments() {
    let clock = ManualClock::new(1_000);
    let mut g = Generator::with_seed(clock.clone(), 7);
    let a = g.next_id().unwrap();
    let b = g.next_id().unwrap();
    assert_eq!(b.0, a.0 + 1);
    assert_eq!(a.timestamp_ms(), 1_000);
    assert_eq!(g.clock_regressions(), 0);
}

#[test]
fn backwards_clock_clamps_and_counts() {
    let clock = ManualClock::new(5_000);
    let mut g = Generator::with_seed(clock.clone(), 1);
    let a = g.next_id().unwrap();
    clock.set_ms(4_000);
    let b = g.next_id().unwrap();
    let c = g.next_id().unwrap();
    assert!(a < b && b < c);
    assert_eq!(b.timestamp_ms(), 5_000);
    assert_eq!(g.clock_regressions(), 2);
    clock.set_ms(6_000);
    let d = g.next_id().unwrap();
    assert_eq!(d.timestamp_ms(), 6_000);
    assert_eq!(g.clock_regressions(), 2);
}

#[test]
fn random_overflow_carries_into_next_millisecond() {
    let clock = ManualClock::new(10);
    let mut g = Generator::with_seed(clock, 3);
    // Pretend the last ID was the highest of millisecond 10.
    g.advance_past(max_for_ms(10));
    let next = g.next_id().unwrap();
    assert_eq!(next.timestamp_ms(), 11);
    assert!(next > max_for_ms(10));
    assert_eq!(next.random() >> 79, 0, "room left for increments");
    // It goes on increasing from there.
    assert_eq!(g.next_id().unwrap().0, next.0 + 1);
}

#[test]
fn generators_advanced_to_the_same_floor_do_not_meet() {
    // A strong read nudges idle writers to its target ULID, in the current millisecond: their
    // next IDs, in that millisecond, must all differ (and all lie above the floor).
    let floor = Ulid((10u128 << 80) | 12_345);
    let ids: std::collections::HashSet<u128> = (0..64)
        .map(|seed| {
            let mut g = Generator::with_seed(ManualClock::new(10), seed);
            g.advance_past(floor);
            assert_eq!(g.last(), floor, "the promise is the floor itself");
            let id = g.next_id().unwrap();
            assert!(id > floor);
            assert_eq!(id.timestamp_ms(), 10);
            // Then plain increments again.
            assert_eq!(g.next_id().unwrap().0, id.0 + 1);
            id.0
        })
        .collect();
    assert_eq!(ids.len(), 64);
}

#[test]
fn generators_carried_past_the_same_millisecond_do_not_meet() {
    // Idle writers advance past the end of the previous millisecond; if the clock then stands
    // at or behind it, each one's next ID is a carry into the next millisecond. Those must not
    // be the same ID in every generator.
    let ids: std::collections::HashSet<u128> = (0..64)
        .map(|seed| {
            let mut g = Generator::with_seed(ManualClock::new(10), seed);
            g.advance_past(max_for_ms(10));
            g.next_id().unwrap().0
        })
        .collect();
    assert_eq!(ids.len(), 64);
}

#[test]
fn exhausted_space_answers_none_without_panicking() {
    let clock = ManualClock::new(MAX_MS);
    let mut g = Generator::with_seed(clock, 3);
    g.advance_past(Ulid(u128::MAX - 1));
    assert_eq!(g.next_id(), Some(Ulid(u128::MAX)));
    assert_eq!(g.next_id(), None);
    assert_eq!(g.reserve(5), None);
}

#[test]
fn reserve_is_contiguous_and_reads_clock_once() {
    let clock = ManualClock::new(42);
    let mut g = Generator::with_seed(clock, 9);
    let r = g.reserve(1000).unwrap();
    let ids: Vec<_> = r.iter().collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    assert_eq!(r.last(), *ids.last().unwrap());
    assert_eq!(g.last(), r.last());
}

#[test]
fn fresh_millisecond_leaves_room_for_increments() {
    for seed in 0..100 {
        let mut g = Generator::with_seed(ManualClock::new(1), seed);
        let id = g.next_id().unwrap();
        assert_eq!(id.random() >> 79, 0, "top random bit must be clear");
    }
}

fn check_text(id: u128, expected: &str) {
    let u = Ulid(id);
    assert_eq!(std::str::from_utf8(&encode(u)).unwrap(), expected);
    assert_eq!(u.to_string(), expected, "agrees with the ulid crate");
    assert_eq!(parse(expected), Some(u));
    assert_eq!(parse(&expected.to_lowercase()), Some(u));
}

#[test]
fn text_round_trips() {
    check_text(0, "00000000000000000000000000");
    check_text(u128::MAX, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    check_text(
        Ulid::from_string("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap().0,
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    );
}

#[test]
fn parse_rejects_non_ulids() {
    for bad in [
        "",
        "0",
        "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "01ARZ3NDEKTSV4RRFFQ69G5FAU!",
        "01ARZ3NDEKTSV4RRFFQ69G5FAI",
    ] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
}

#[test]
fn time_conversions() {
    let ms = ms_from_rfc3339("2026-11-22T03:00:00.123Z").unwrap();
    assert_eq!(ms, 1_795_316_400_123);
    assert_eq!(ms_from_rfc3339("2026-11-22T04:00:00.123+01:00").unwrap(), ms);
    assert_eq!(min_for_ms(ms).timestamp_ms(), ms);
    assert_eq!(max_for_ms(ms).timestamp_ms(), ms);
    assert_eq!(max_for_ms(ms).0 + 1, min_for_ms(ms + 1).0);
    assert_eq!(to_rfc3339(min_for_ms(ms)), "2026-11-22T03:00:00.123Z");
    assert_eq!(parse_ulid_or_time("2026-11-22T03:00:00.123Z").unwrap(), min_for_ms(ms));
    assert!(matches!(ms_from_rfc3339("yesterday"), Err(TimeError::Unparsable { .. })));
    assert!(matches!(ms_from_rfc3339("1969-12-31T23:59:59Z"), Err(TimeError::OutOfRange { .. })));
}

#[test]
fn encoding_agrees_with_the_ulid_crate_on_many_values() {
    // Random values, plus every single bit set, to cover each digit's edges.
    let mut rng = fastrand::Rng::with_seed(7);
    let values = (0..100_000).map(|_| rng.u128(..)).chain((0..128).map(|b| 1u128 << b));
    for v in values {
        check_text(v, &Ulid(v).to_string());
    }
}
