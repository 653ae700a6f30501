//! Invariant 7, measured: the heap cost of one idle tracked control connection, counted by
//! a counting global allocator while 10,000 logged-in, idle connections are tracked.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};

use ftp6proxy_core::engine::Config;
use support::{Harness, Side};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// At most 1 KiB of heap per idle tracked connection (issue 9, item 3).
#[test]
fn an_idle_tracked_connection_costs_at_most_1_kib() {
    const N: usize = 10_000;
    let config = Config {
        max_connections: N,
        ..Config::default()
    };
    let mut h = Harness::with(config, support::CLIENT6, support::SERVER6);
    // Warm up everything that is allocated once (event queue, limiter, hole table).
    h.handshake();
    h.login();
    h.events.clear();
    h.events.shrink_to_fit();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 1..N {
        let port = u16::try_from(20_000 + i).unwrap();
        h.client = SocketAddr::new(h.client.ip(), port);
        h.client_seq = 1000;
        h.server_seq = 5_000_000;
        h.handshake();
        h.login();
        h.send(Side::Client, b"TYPE I\r\n");
        h.send(Side::Server, b"200 Switching to Binary mode.\r\n");
        h.events.clear();
    }
    h.events.shrink_to_fit();
    assert_eq!(h.engine.connections(), N);
    let per_connection = (LIVE.load(Ordering::Relaxed) - before) / (N as isize - 1);
    println!("heap per idle tracked connection: {per_connection} bytes");
    assert!(
        per_connection <= 1024,
        "{per_connection} bytes per connection"
    );
}
