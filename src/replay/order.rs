//! Puts packets back into time order.
//!
//! A capture of several interfaces need not be in time order: dumpcap writes what each
//! interface's buffer holds, so a server's reply captured on one interface can come in the
//! file after the client's data SYN captured on the other, although it was earlier. The
//! replay needs time order (the hole is opened by the reply, the SYN must find it), so the
//! packets it acts on wait here for up to [`WINDOW`] of capture time, or until [`MAX`] of
//! them wait, and leave by timestamp, ties in file order. A packet stamped earlier than one
//! that has already left is released as it comes (the replay's clock then counts it as
//! simultaneous with the last one). Pure: no I/O.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// How far (ns of capture time) a packet may be stamped before one that precedes it in the
/// file and still be replayed in time order.
pub const WINDOW: i128 = 2_000_000_000;

/// Most packets that wait at once.
pub const MAX: usize = 65_536;

struct Entry<T> {
    key: i128,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed, so that the max-heap yields the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.key, other.seq).cmp(&(self.key, self.seq))
    }
}

/// Packets waiting to be replayed in time order.
pub struct Reorder<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
    newest: Option<i128>,
    window: i128,
    max: usize,
    /// Packets stamped earlier than one before them in the file.
    pub inversions: u64,
}

impl<T> Reorder<T> {
    /// An empty buffer with the default [`WINDOW`] and [`MAX`].
    pub fn new() -> Reorder<T> {
        Reorder::with(WINDOW, MAX)
    }

    /// An empty buffer holding back `window` ns and at most `max` packets.
    pub fn with(window: i128, max: usize) -> Reorder<T> {
        Reorder {
            heap: BinaryHeap::new(),
            seq: 0,
            newest: None,
            window,
            max: max.max(1),
            inversions: 0,
        }
    }

    /// Adds a packet stamped `time` (ns), or with no timestamp: then it sorts after every
    /// packet so far.
    pub fn push(&mut self, time: Option<i128>, item: T) {
        let key = match (time, self.newest) {
            (Some(t), Some(newest)) => {
                if t < newest {
                    self.inversions += 1;
                }
                t
            }
            (Some(t), None) => t,
            (None, newest) => newest.unwrap_or(i128::MIN),
        };
        self.newest = Some(self.newest.map_or(key, |n| n.max(key)));
        self.seq += 1;
        self.heap.push(Entry {
            key,
            seq: self.seq,
            item,
        });
    }

    /// The earliest packet, if it has waited long enough (or too many wait).
    pub fn pop_ready(&mut self) -> Option<T> {
        let newest = self.newest?;
        let earliest = self.heap.peek()?.key;
        if self.heap.len() > self.max || earliest <= newest.saturating_sub(self.window) {
            self.heap.pop().map(|e| e.item)
        } else {
            None
        }
    }

    /// The earliest packet, however long it waited (the end of the capture).
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|e| e.item)
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<T>(r: &mut Reorder<T>) -> Vec<T> {
        std::iter::from_fn(|| r.pop()).collect()
    }

    #[test]
    fn packets_leave_in_time_order_ties_in_file_order() {
        let mut r = Reorder::with(100, 1000);
        for (t, name) in [(10, "a"), (30, "c"), (20, "b"), (30, "d"), (5, "z")] {
            r.push(Some(t), name);
        }
        assert_eq!(r.pop_ready(), None, "nothing has waited 100 ns yet");
        assert_eq!(r.inversions, 2);
        assert_eq!(drain(&mut r), ["z", "a", "b", "c", "d"]);
    }

    #[test]
    fn a_packet_leaves_once_the_window_has_passed() {
        let mut r = Reorder::with(100, 1000);
        r.push(Some(0), 0);
        r.push(Some(99), 1);
        assert_eq!(r.pop_ready(), None);
        r.push(Some(100), 2);
        assert_eq!(r.pop_ready(), Some(0));
        assert_eq!(r.pop_ready(), None);
        r.push(Some(1000), 3);
        assert_eq!(r.pop_ready(), Some(1));
        assert_eq!(r.pop_ready(), Some(2));
        assert_eq!(r.pop_ready(), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn too_many_waiting_packets_are_let_go() {
        let mut r = Reorder::with(i128::MAX, 2);
        r.push(Some(3), 'c');
        r.push(Some(1), 'a');
        assert_eq!(r.pop_ready(), None);
        r.push(Some(2), 'b');
        assert_eq!(r.pop_ready(), Some('a'));
        assert_eq!(r.pop_ready(), None);
        assert!(!r.is_empty());
    }

    #[test]
    fn untimed_packets_sort_after_everything_so_far() {
        let mut r = Reorder::with(100, 1000);
        r.push(None, "first");
        r.push(Some(50), "b");
        r.push(None, "c");
        r.push(Some(40), "a");
        assert_eq!(drain(&mut r), ["first", "a", "b", "c"]);
        assert!(r.is_empty());
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let mut r = Reorder::new();
        r.push(Some(i128::MIN), 1);
        r.push(Some(i128::MAX), 2);
        assert_eq!(r.pop_ready(), Some(1));
        assert_eq!(r.pop_ready(), None);
    }
}
