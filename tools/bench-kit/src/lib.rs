//! ftp6proxy's benchmark kit (issue 12), used by `tools/bench`: a blocking FTP client
//! ([`ftp`]), the workloads ([`load`]), statistics ([`stats`]) and the report that prints
//! the table and the `bench:` line and writes BENCHMARKS.md and the plot's inputs
//! ([`report`]). The NFQUEUE floor is the `f6pb-floor` binary.

pub mod ftp;
pub mod load;
pub mod report;
pub mod stats;
