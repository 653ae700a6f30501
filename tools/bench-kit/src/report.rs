//! The bench's report: reads the results `tools/bench` collected (one
//! `contender<TAB>block<TAB>metric<TAB>value` line per measurement), takes each metric's
//! median over a contender's blocks, and renders the table, the ratios against the targets
//! of issue 12, the final `bench:` line, BENCHMARKS.md and the plot's data and gnuplot
//! script. Every number comes from the results file: nothing is hard-coded.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stats::median;

/// Contender keys in column order, with their labels (`busypoll`: inline with
/// `--busy-poll`, `F6PB_BUSY_POLL` µs, 100 by default; `nflog`: copy mode).
pub const CONTENDERS: [(&str, &str); 5] = [
    ("kernel", "kernel helper"),
    ("floor", "NFQUEUE floor"),
    ("ftp6proxy", "ftp6proxy inline"),
    ("busypoll", "ftp6proxy inline --busy-poll"),
    ("nflog", "ftp6proxy copy (nflog)"),
];

/// Contenders that a run may leave out, or that skip a workload: an empty cell of theirs
/// says "not run".
const OPTIONAL: [&str; 2] = ["busypoll", "nflog"];

/// Concurrency levels of the transfer workload.
pub const CONCURRENCY: [usize; 3] = [1, 8, 64];

/// Measurements by contender, then metric: one value per block.
#[derive(Debug, Default)]
pub struct Results {
    values: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    blocks: Vec<String>,
}

impl Results {
    /// Parses the results file; malformed lines are skipped.
    pub fn parse(text: &str) -> Results {
        let mut r = Results::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [contender, block, metric, value] = f[..] else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let tag = format!("{block}:{contender}");
            if !r.blocks.contains(&tag) {
                r.blocks.push(tag);
            }
            r.values
                .entry(contender.to_string())
                .or_default()
                .entry(metric.to_string())
                .or_default()
                .push(value);
        }
        r
    }

    /// The order in which the contenders ran, e.g. `kernel floor ftp6proxy ftp6proxy ...`.
    pub fn order(&self) -> String {
        self.blocks
            .iter()
            .map(|t| t.split_once(':').map_or(t.as_str(), |(_, c)| c))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn all(&self, contender: &str, metric: &str) -> &[f64] {
        self.values
            .get(contender)
            .and_then(|m| m.get(metric))
            .map_or(&[], Vec::as_slice)
    }

    /// Median over blocks (sum for failure counts); `None` when never measured.
    pub fn get(&self, contender: &str, metric: &str) -> Option<f64> {
        if let Some(per_k) = metric.strip_prefix("cpu_per_1k.") {
            let cpu: f64 = self.all(contender, &format!("cpu_ms.{per_k}")).iter().sum();
            let pkts: f64 = self.all(contender, "ctl_pkts").iter().sum();
            return (pkts > 0.0 && !self.all(contender, &format!("cpu_ms.{per_k}")).is_empty())
                .then(|| cpu / pkts * 1000.0);
        }
        let v = self.all(contender, metric);
        if v.is_empty() {
            None
        } else if metric.ends_with("_failed") || metric.ends_with("_dropped") {
            Some(v.iter().sum())
        } else {
            Some(median(v))
        }
    }

    fn ratio(&self, a: &str, b: &str, metric: &str) -> Option<f64> {
        let (x, y) = (self.get(a, metric)?, self.get(b, metric)?);
        (y > 0.0).then(|| x / y)
    }
}

/// Table rows: metric key and label.
fn rows() -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = vec![
        (
            "noop_idle_p50_us".into(),
            "NOOP round trip idle, p50 (µs)".into(),
        ),
        (
            "noop_idle_p99_us".into(),
            "NOOP round trip idle, p99 (µs)".into(),
        ),
    ];
    for c in CONCURRENCY {
        r.push((
            format!("xfer_c{c}_per_s"),
            format!("transfers/s, {c} clients"),
        ));
        r.push((
            format!("xfer_c{c}_failed"),
            format!("failed transfers, {c} clients (sum)"),
        ));
        r.push((
            format!("noop_c{c}_p50_us"),
            format!("NOOP p50 under {c} clients (µs)"),
        ));
        r.push((
            format!("noop_c{c}_p99_us"),
            format!("NOOP p99 under {c} clients (µs)"),
        ));
    }
    for (k, l) in [
        (
            "pipelined_rt_per_s",
            "32 sessions × 1 NOOP outstanding: round trips/s",
        ),
        ("pipelined_p50_us", "32 sessions: round trip p50 (µs)"),
        ("pipelined_p99_us", "32 sessions: round trip p99 (µs)"),
        ("bulk_mib_s", "bulk download (MiB/s)"),
        ("epsv_p50_us", "EPSV→229 round trip, paced, p50 (µs)"),
        ("epsv_p99_us", "EPSV→229 round trip, paced, p99 (µs)"),
        ("hole_p50_us", "229 held in the gateway, p50 (µs)"),
        ("hole_p99_us", "229 held in the gateway, p99 (µs)"),
        ("cpu_per_1k.helper", "helper CPU ms / 1000 control packets"),
        ("cpu_per_1k.monitor", "  monitor"),
        ("cpu_per_1k.worker", "  worker"),
        ("cpu_per_1k.parser", "  parser"),
        (
            "cpu_per_1k.machine",
            "whole machine CPU ms / 1000 control packets",
        ),
        (
            "rss_kib_per_conn",
            "daemon RSS per idle tracked connection (KiB)",
        ),
        ("queue_dropped", "NFQUEUE: dropped by the kernel (sum)"),
        ("user_dropped", "NFQUEUE: passed unseen, socket full (sum)"),
        ("bulk_failed", "bulk download failed (sum)"),
    ] {
        r.push((k.into(), l.into()));
    }
    r
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if !x.is_finite() => "—".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.2}"))
}

/// The markdown table (also readable as plain text).
pub fn table(r: &Results) -> String {
    let mut s = String::from("| workload |");
    for (_, label) in CONTENDERS {
        let _ = write!(s, " {label} |");
    }
    s.push_str("\n|---|");
    for _ in CONTENDERS {
        s.push_str("---:|");
    }
    s.push('\n');
    for (key, label) in rows() {
        if CONTENDERS.iter().all(|(c, _)| r.get(c, &key).is_none()) {
            continue;
        }
        let _ = write!(s, "| {label} |");
        for (c, _) in CONTENDERS {
            let cell = if OPTIONAL.contains(&c) && r.get(c, &key).is_none() {
                "not run".into()
            } else {
                fmt(r.get(c, &key))
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

/// ftp6proxy's transfers/s over the kernel's, the worst concurrency.
fn transfers_vs_kernel(r: &Results) -> Option<f64> {
    CONCURRENCY
        .iter()
        .map(|c| r.ratio("ftp6proxy", "kernel", &format!("xfer_c{c}_per_s")))
        .collect::<Option<Vec<f64>>>()
        .and_then(|v| v.into_iter().reduce(f64::min))
}

/// The last line of the bench's output.
pub fn bench_line(r: &Results) -> String {
    format!(
        "bench: noop_p50_vs_floor={} noop_p99_vs_floor={} noop_p50_vs_kernel={} transfers_vs_kernel={} hole_p99_us={}",
        fmt_ratio(r.ratio("ftp6proxy", "floor", "noop_idle_p50_us")),
        fmt_ratio(r.ratio("ftp6proxy", "floor", "noop_idle_p99_us")),
        fmt_ratio(r.ratio("ftp6proxy", "kernel", "noop_idle_p50_us")),
        fmt_ratio(transfers_vs_kernel(r)),
        r.get("ftp6proxy", "hole_p99_us")
            .map_or("n/a".into(), |x| format!("{x:.0}")),
    )
}

/// Issue 12's targets, each with the measured value and whether it is met.
pub fn targets(r: &Results) -> String {
    let mut s = String::from("| target | measured | met |\n|---|---:|:---:|\n");
    let mut row = |name: &str, v: Option<f64>, ok: &dyn Fn(f64) -> bool| {
        let (m, met) = match v {
            Some(x) => (format!("{x:.2}"), if ok(x) { "yes" } else { "**no**" }),
            None => ("n/a".into(), "—"),
        };
        let _ = writeln!(s, "| {name} | {m} | {met} |");
    };
    // The inline targets, for the default daemon and for the one with --busy-poll.
    for (c, with) in [("ftp6proxy", ""), ("busypoll", ", with --busy-poll")] {
        row(
            &format!("inline NOOP p50 ≤ 1.5× floor{with}"),
            r.ratio(c, "floor", "noop_idle_p50_us"),
            &|x| x <= 1.5,
        );
        row(
            &format!("inline NOOP p99 ≤ 2× floor{with}"),
            r.ratio(c, "floor", "noop_idle_p99_us"),
            &|x| x <= 2.0,
        );
        row(
            &format!("round trips/s under load (32 sessions) ≥ 0.9× kernel{with}"),
            r.ratio(c, "kernel", "pipelined_rt_per_s"),
            &|x| x >= 0.9,
        );
    }
    for c in CONCURRENCY {
        row(
            &format!("transfers/s ≥ 0.95× kernel, {c} clients"),
            r.ratio("ftp6proxy", "kernel", &format!("xfer_c{c}_per_s")),
            &|x| x >= 0.95,
        );
    }
    row(
        "hole latency p99 ≤ 200 µs (µs, see note)",
        r.get("ftp6proxy", "hole_p99_us"),
        &|x| x <= 200.0,
    );
    row(
        "bulk throughput ≥ 0.99× kernel",
        r.ratio("ftp6proxy", "kernel", "bulk_mib_s"),
        &|x| x >= 0.99,
    );
    row(
        "≤ 1 KiB per idle tracked connection (KiB)",
        r.get("ftp6proxy", "rss_kib_per_conn"),
        &|x| x <= 1.0,
    );
    row(
        "copy mode NOOP p50 ≤ 1.1× kernel",
        r.ratio("nflog", "kernel", "noop_idle_p50_us"),
        &|x| x <= 1.1,
    );
    if let Some(bound) = r.ratio("floor", "kernel", "pipelined_rt_per_s") {
        let _ = writeln!(
            s,
            "\nThe floor itself, a reader that accepts every packet at once, made {bound:.2}× \
             the kernel helper's round trips/s under load: what any reader of the queue can \
             reach on this machine, whatever it does with the packets."
        );
    }
    s
}

/// Data for the plot: one line per concurrency, two columns (transfers/s, NOOP p99 µs) per
/// contender that was measured.
pub fn plot_data(r: &Results) -> (String, Vec<&'static str>) {
    let measured: Vec<&'static str> = CONTENDERS
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| r.get(c, "xfer_c1_per_s").is_some())
        .collect();
    let mut s = String::from("# clients");
    for c in &measured {
        let _ = write!(s, " {c}_xfer_per_s {c}_noop_p99_us");
    }
    s.push('\n');
    for n in CONCURRENCY {
        let _ = write!(s, "{n}");
        for c in &measured {
            let x = r.get(c, &format!("xfer_c{n}_per_s")).unwrap_or(f64::NAN);
            let p = r.get(c, &format!("noop_c{n}_p99_us")).unwrap_or(f64::NAN);
            let _ = write!(s, " {x:.1} {p:.0}");
        }
        s.push('\n');
    }
    (s, measured)
}

/// A gnuplot script drawing `data` into `svg`: transfers/s and NOOP p99 against clients.
pub fn gnuplot_script(data: &str, svg: &str, measured: &[&str]) -> String {
    fn label(c: &str) -> &str {
        CONTENDERS
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(c, |(_, l)| *l)
    }
    let mut xfer = Vec::new();
    let mut p99 = Vec::new();
    for (i, c) in measured.iter().enumerate() {
        let col = 2 + 2 * i;
        xfer.push(format!(
            "'{data}' using 1:{col} with linespoints lw 2 title '{}'",
            label(c)
        ));
        p99.push(format!(
            "'{data}' using 1:{} with linespoints lw 2 title '{}'",
            col + 1,
            label(c)
        ));
    }
    format!(
        "set terminal svg size 960,460 dynamic font 'sans,11'\n\
         set output '{svg}'\n\
         set multiplot layout 1,2\n\
         set logscale x 2\nset xrange [0.8:80]\nset xtics (1, 8, 64)\nset grid\n\
         set key below\n\
         set xlabel 'concurrent clients'\n\
         set title 'small downloads per second (higher is better)'\nset ylabel 'transfers/s'\n\
         set yrange [0:*]\n\
         plot {}\n\
         set title 'NOOP round trip p99 under that load (lower is better)'\nset ylabel 'µs'\n\
         set logscale y\nset yrange [*:*]\n\
         plot {}\n\
         unset multiplot\n",
        xfer.join(", "),
        p99.join(", ")
    )
}

/// What BENCHMARKS.md says, around the numbers.
pub struct Page<'a> {
    /// The machine: CPU model, cores, kernel.
    pub machine: &'a str,
    /// How the run was made (mode, durations, block order).
    pub run: &'a str,
    /// The core micro-benchmarks' output.
    pub micro: &'a str,
    /// perf's view of the daemon under load (empty: not profiled).
    pub profile: &'a str,
    /// The plot's file name, next to BENCHMARKS.md.
    pub svg: &'a str,
}

/// BENCHMARKS.md.
pub fn markdown(r: &Results, page: &Page<'_>) -> String {
    format!(
        "# Benchmarks\n\n\
         Written by `tools/bench` (issue 12); do not edit by hand, run it again. Absolute \
         numbers on shared machines are noise: only the ratios between contenders measured \
         in the same run mean anything.\n\n\
         ## Machine\n\n```\n{machine}\n```\n\n\
         ## Run\n\n{run}\n\nBlock order (interleaved so that drift cancels): `{order}`. \
         Each number is the median over a contender's blocks (failures: the sum).\n\n\
         ## Results\n\n{table}\n\
         ![transfers/s and NOOP p99 against concurrency]({svg})\n\n\
         ## Targets (issue 12)\n\n{targets}\n\
         ```\n{line}\n```\n\n\
         ## Core micro-benchmarks\n\n\
         `cargo bench -p ftp6proxy-bench-kit --bench engine` (std::time, best of several \
         rounds):\n\n```\n{micro}\n```\n\n\
         {profile}\
         ## How it is measured\n\n\
         - **Lab**: three network namespaces `f6pb-client`, `f6pb-gw`, `f6pb-server` joined by \
         veth pairs; the gateway forwards with a stateful nftables ruleset (policy drop, \
         `ct state established,related accept`). IPv6 throughout (documentation addresses). \
         Server: vsftpd with passive ports drawn at random from 10000–60000, so every \
         transfer uses a fresh port, and active transfers from port 20.\n\
         - **kernel helper**: `ct helper` of type \"ftp\" on port 21; data connections are \
         RELATED. No queue.\n\
         - **NFQUEUE floor**: `f6pb-floor` (tools/bench-kit) reads the same NFQUEUE as \
         ftp6proxy (iptables mangle FORWARD `-j NFQUEUE`, as in the lab: this kernel has no \
         nft `queue`) and accepts every packet at once (one batch verdict per datagram, no \
         payload, copy range 128); with `F6PB_CPU=N` on CPU N, like ftp6proxy (`taskset`). It \
         opens no holes, so the kernel helper stays on for its \
         data connections: its transfers/s are the kernel's plus the queue's cost.\n\
         - **ftp6proxy inline**: the release build, `-d` (foreground, as deployed otherwise) \
         with `-b 1024 -c 60000` (with `F6PB_CPU=N` also `--cpu N`: every process on one \
         CPU, ftp6proxy(8)), `-j f6pb-gw`, `--firewall nft`; holes are elements of the \
         lab's `ftp6proxy6` set, used up by their data connection's first packet (the \
         `delete @ftp6proxy6` rule of nftables.conf.sample). `-c` is large so that slots \
         are never what limits: the kernel helper does thousands of transfers a second here, \
         and a slot is freed only when the monitor sees its element gone.\n\
         - **ftp6proxy copy (nflog)**: the same daemon and flags with `--intercept nflog`, \
         fed by iptables `-j NFLOG --nflog-group` rules in mangle FORWARD instead of the \
         queue: every packet goes on at once and the hole follows it. A data connection's \
         first SYN that overtakes its hole is dropped and sent again by TCP about 1 s \
         later (the copy-mode race, ftp6proxy(8)): that shows in its transfers/s.\n\
         - **Load generator** (`f6pb-load`): threads with logged-in control connections, no \
         process per transfer. Transfers alternate passive (EPSV) and active (EPRT) downloads \
         of a 3.9 KB file; a probe session sends a NOOP every 2 ms meanwhile (NOOP under \
         load). Pipelined: 32 sessions each keeping one NOOP outstanding, one thread over \
         poll(2).\n\
         - **Hole latency**: the daemon has no counter for it yet, so it is measured from \
         outside: tcpdump in the gateway namespace on both veths while one session sends a \
         paced EPSV every 5 ms; the time between a 229 reply coming in from the server and \
         going out to the client is how long the gateway held it: queue, parse, hole request, \
         nft confirmation, verdict. That is an upper bound of \"announcing packet enters the \
         daemon → firewall confirms\"; the floor's column is the same path without a hole.\n\
         - **CPU per 1000 control packets**: utime+stime of each process (from /proc) over a \
         whole block, divided by the control packets the gateway forwarded in that block \
         (an nft counter on port 21). \"whole machine\" is all CPU time of the machine in the \
         block (load generator, vsftpd and the kernel's forwarding included).\n\
         - **RSS per idle connection**: the daemon's resident memory (all three processes) \
         before and after opening idle logged-in control connections, divided by their count.\n",
        machine = page.machine.trim_end(),
        run = page.run.trim_end(),
        order = r.order(),
        table = table(r),
        svg = page.svg,
        targets = targets(r),
        line = bench_line(r),
        micro = page.micro.trim_end(),
        profile = if page.profile.trim().is_empty() {
            String::new()
        } else {
            format!(
                "## Profile of ftp6proxy under load\n\n```\n{}\n```\n\n",
                page.profile.trim_end()
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut text = String::new();
        for (block, c) in [
            "kernel",
            "floor",
            "ftp6proxy",
            "ftp6proxy",
            "floor",
            "kernel",
        ]
        .iter()
        .enumerate()
        {
            let scale = match *c {
                "kernel" => 1.0,
                "floor" => 1.2,
                _ => 2.0,
            };
            for (m, v) in [
                ("noop_idle_p50_us", 30.0 * scale),
                ("noop_idle_p99_us", 60.0 * scale),
                ("xfer_c1_per_s", 100.0 / scale),
                ("xfer_c8_per_s", 300.0 / scale),
                ("xfer_c64_per_s", 400.0 / scale),
                ("xfer_c1_failed", 1.0),
            ] {
                text.push_str(&format!("{c}\t{block}\t{m}\t{v}\n"));
            }
        }
        text.push_str("ftp6proxy\t2\thole_p99_us\t150\nbroken line\n");
        Results::parse(&text)
    }

    #[test]
    fn bench_line_has_every_ratio() {
        let r = sample();
        assert_eq!(
            bench_line(&r),
            "bench: noop_p50_vs_floor=1.67 noop_p99_vs_floor=1.67 noop_p50_vs_kernel=2.00 \
             transfers_vs_kernel=0.50 hole_p99_us=150"
        );
        assert_eq!(r.get("kernel", "xfer_c1_failed"), Some(2.0));
        assert_eq!(r.order(), "kernel floor ftp6proxy ftp6proxy floor kernel");
    }

    #[test]
    fn targets_name_the_floor_as_the_bound_under_load() {
        let mut text = String::new();
        for (c, v) in [("kernel", 1000.0), ("floor", 600.0), ("ftp6proxy", 450.0)] {
            text.push_str(&format!("{c}\t1\tpipelined_rt_per_s\t{v}\n"));
        }
        let t = targets(&Results::parse(&text));
        assert!(t.contains("| 0.45 | **no** |"), "{t}");
        assert!(t.contains("made 0.60× the kernel helper's"), "{t}");
        assert!(
            t.contains("| round trips/s under load (32 sessions) ≥ 0.9× kernel, with --busy-poll | n/a | — |"),
            "{t}"
        );
    }

    #[test]
    fn table_marks_the_copy_mode_slot() {
        let t = table(&sample());
        assert!(t.contains("ftp6proxy copy (nflog)"));
        assert!(
            t.contains("not run"),
            "a contender left out is marked, not blank"
        );
        let (data, measured) = plot_data(&sample());
        assert_eq!(measured, ["kernel", "floor", "ftp6proxy"]);
        assert_eq!(data.lines().count(), 4);
    }
}
