//! Shared helpers for the netlink integration tests: a private network namespace per test.
//!
//! Included by `netlink_nft.rs` and `netlink_nfqueue.rs` with `#[path]` (it lives in a
//! subdirectory so it is not a test crate of its own). Each [`Netns`] is created with
//! `ip netns add`, entered by the calling thread with setns(2) before any socket is opened,
//! and deleted on drop (also when the test fails). Nothing here sends traffic outside the namespace.
#![allow(dead_code)]

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace the current thread lives in until it ends.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `f6p-nl-<pid>-<n>` and moves the calling thread into it, with `lo` up.
    ///
    /// # Panics
    /// When not root (loudly: these tests need root), or when `ip` fails.
    pub fn enter() -> Netns {
        Netns::enter_named("f6p-nl")
    }

    /// As [`Netns::enter`], named `<prefix>-<pid>-<n>` (tests that must not share the
    /// lab's `f6p-*` names use their own prefix).
    ///
    /// # Panics
    /// As [`Netns::enter`].
    pub fn enter_named(prefix: &str) -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the netlink integration tests need root (network namespaces, CAP_NET_ADMIN); \
             run `cargo test` as root"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        // From here on Drop removes the namespace, whatever happens.
        let ns = Netns { name };
        let file = File::open(format!("/run/netns/{}", ns.name)).expect("open /run/netns/NAME");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip netns exec NAME argv...` and panics with its output on failure.
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// Runs `ip ...` in the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["ip"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// Runs `nft ARGS` (one argument, as nft joins its arguments anyway) in the namespace.
    pub fn nft(&self, args: &str) -> String {
        self.exec(&["nft", args])
    }

    /// Like [`Netns::nft`] but returns whether it succeeded, without panicking.
    pub fn nft_ok(&self, args: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", args])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `argv`, returns stdout, panics with stderr on failure.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
