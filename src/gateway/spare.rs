//! Memory kept for reuse on the serving thread. Every proxied request parses two heads (the
//! client's request and the instance's answer) into header ranges and then a header map, which
//! cost two and three allocations a head; what a finished head used comes back here, cleared
//! with its memory kept, for the next head to fill.

use std::{cell::RefCell, ops::Range};

use http::HeaderMap;

/// Where a head's header names and values lie in its bytes, as parsed.
pub type HeaderRanges = Vec<(Range<usize>, Range<usize>)>;

/// Maps (and range lists) kept per thread: about the heads being built at once between two
/// waits.
const KEEP: usize = 32;

/// A map (or range list) that grew beyond this many headers is let go rather than kept.
const KEEP_CAPACITY: usize = 64;

type Pool<T> = std::thread::LocalKey<RefCell<Vec<T>>>;

thread_local! {
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static SPARE_RANGES: RefCell<Vec<HeaderRanges>> = const { RefCell::new(Vec::new()) };
}

/// A spare from `pool`, if it has one.
fn reuse<T>(pool: &'static Pool<T>) -> Option<T> {
    pool.try_with(|spare| spare.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

/// Puts `item` (already emptied) back into `pool` unless the pool is full. At thread exit the
/// pool may be gone already; the item is simply dropped then.
fn keep<T>(pool: &'static Pool<T>, item: T) {
    let _ = pool.try_with(|spare| {
        if let Ok(mut spare) = spare.try_borrow_mut()
            && spare.len() < KEEP
        {
            spare.push(item);
        }
    });
}

/// An empty range list, reused when one is spare.
pub fn header_ranges() -> HeaderRanges {
    reuse(&SPARE_RANGES).unwrap_or_default()
}

/// Keeps `ranges`' memory for a later `header_ranges` on this thread.
pub fn keep_header_ranges(mut ranges: HeaderRanges) {
    if (1..=KEEP_CAPACITY).contains(&ranges.capacity()) {
        ranges.clear();
        keep(&SPARE_RANGES, ranges);
    }
}

/// An empty map with room for `capacity` headers, reused when one is spare.
pub fn header_map(capacity: usize) -> HeaderMap {
    match reuse(&SPARE_MAPS) {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Keeps `map`'s memory for a later `header_map` on this thread.
pub fn keep_header_map(mut map: HeaderMap) {
    if (1..=KEEP_CAPACITY).contains(&map.capacity()) {
        map.clear();
        keep(&SPARE_MAPS, map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_memory() {
        let mut map = header_map(8);
        map.insert(http::header::HOST, http::HeaderValue::from_static("a"));
        map.append("x-many", http::HeaderValue::from_static("1"));
        map.append("x-many", http::HeaderValue::from_static("2"));
        let capacity = map.capacity();
        keep_header_map(map);
        let again = header_map(4);
        assert!(again.is_empty(), "a reused map holds nothing: {again:?}");
        assert_eq!(again.capacity(), capacity);
        // A second take finds no spare and makes a new map of the size asked for.
        let fresh = header_map(20);
        assert!(fresh.is_empty() && fresh.capacity() >= 20);
    }

    #[test]
    fn a_range_list_given_back_comes_back_empty_with_its_memory() {
        let mut ranges = header_ranges();
        ranges.extend([(0..4, 6..9), (11..15, 17..20)]);
        let capacity = ranges.capacity();
        keep_header_ranges(ranges);
        let again = header_ranges();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        assert_eq!(header_ranges().capacity(), 0, "only one was kept");
    }

    #[test]
    fn a_large_map_is_not_kept() {
        let big = header_map(KEEP_CAPACITY * 2);
        let capacity = big.capacity();
        keep_header_map(big);
        assert_ne!(header_map(1).capacity(), capacity);
    }
}
