//! The load generator and report of `tools/bench` (issue 12).
//!
//! ```text
//! f6pb-load run SERVER_ADDR CONTENDER BLOCK [--quick] [--only W1,W2...]
//!     runs the workloads (noop, bulk, pipelined, transfers; epsv only when named) against
//!     the FTP server at SERVER_ADDR (port 21) and prints one
//!     `CONTENDER<TAB>BLOCK<TAB>metric<TAB>value` line per measurement
//! f6pb-load idle SERVER_ADDR PORT N
//!     opens N logged-in control connections, prints `ready N`, holds them until stdin closes
//! f6pb-load residence CAPTURE INGRESS EGRESS CONTENDER BLOCK
//!     the time 229 replies spent in the gateway, from a tcpdump text capture
//! f6pb-load report RESULTS [--md FILE --machine FILE --run FILE --micro FILE --profile FILE --svg NAME]
//!          [--plot-data FILE --plot-script FILE]
//!     prints the table and ends with the `bench:` line; writes BENCHMARKS.md and the plot's
//!     inputs when asked
//! ```

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ftp6proxy_bench_kit::{load, report, stats};

fn usage() -> ! {
    eprintln!(
        "usage: f6pb-load run SERVER CONTENDER BLOCK [--quick] [--only WORKLOAD]\n\
         \x20      f6pb-load idle SERVER PORT N\n\
         \x20      f6pb-load residence CAPTURE INGRESS EGRESS CONTENDER BLOCK\n\
         \x20      f6pb-load report RESULTS [--md FILE --machine FILE --run FILE --micro FILE \
         --svg NAME] [--plot-data FILE --plot-script FILE]"
    );
    std::process::exit(64)
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("f6pb-load: {path}: {e}");
        std::process::exit(1)
    })
}

fn write(path: &str, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("f6pb-load: {path}: {e}");
        std::process::exit(1)
    }
}

fn server(arg: Option<&String>) -> SocketAddr {
    let ip: IpAddr = arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
    SocketAddr::new(ip, 21)
}

fn emit(contender: &str, block: &str, metrics: &load::Metrics) {
    for (m, v) in metrics {
        println!("{contender}\t{block}\t{m}\t{v:.3}");
    }
}

fn run(args: &[String]) {
    let server = server(args.get(2));
    let (Some(contender), Some(block)) = (args.get(3), args.get(4)) else {
        usage()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let only = option(args, "--only");
    let wanted = |w: &str| only.is_none_or(|o| o.split(',').any(|o| o == w));
    // Quick: eight blocks (four contenders, A B C D D C B A) within the 120 s budget.
    let secs = if quick { 1.0 } else { 6.0 };
    if wanted("noop") {
        emit(
            contender,
            block,
            &load::noop_idle(server, if quick { 1000 } else { 5000 }),
        );
    }
    if wanted("pipelined") {
        emit(contender, block, &load::pipelined(server, 32, secs));
    }
    if wanted("bulk") {
        emit(contender, block, &load::bulk(server, "bulk.bin"));
    }
    if wanted("transfers") {
        for c in report::CONCURRENCY {
            emit(
                contender,
                block,
                &load::transfers(server, c, secs, "small.txt"),
            );
        }
    }
    if only.is_some() && wanted("epsv") {
        let secs = if quick { 1.0 } else { 5.0 };
        emit(
            contender,
            block,
            &load::epsv_paced(server, secs, Duration::from_millis(5)),
        );
    }
}

fn idle(args: &[String]) {
    let mut server = server(args.get(2));
    server.set_port(
        args.get(3)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| usage()),
    );
    let n: usize = args
        .get(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| usage());
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match ftp6proxy_bench_kit::ftp::Session::open(server) {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("f6pb-load: idle session {}: {e}", held.len());
                break;
            }
        }
    }
    println!("ready {}", held.len());
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

fn residence(args: &[String]) {
    let [_, _, capture, ingress, egress, contender, block] = args else {
        usage()
    };
    let samples = stats::residence(&read(capture), ingress, egress);
    emit(
        contender,
        block,
        &vec![
            ("hole_p50_us".into(), stats::percentile(&samples, 50.0)),
            ("hole_p99_us".into(), stats::percentile(&samples, 99.0)),
            ("hole_n".into(), samples.len() as f64),
        ],
    );
}

fn report(args: &[String]) {
    let results = report::Results::parse(&read(args.get(2).unwrap_or_else(|| usage())));
    print!("{}", report::table(&results));
    println!();
    print!("{}", report::targets(&results));
    if let (Some(data), Some(script), Some(svg)) = (
        option(args, "--plot-data"),
        option(args, "--plot-script"),
        option(args, "--svg"),
    ) {
        let (text, measured) = report::plot_data(&results);
        write(data, &text);
        write(script, &report::gnuplot_script(data, svg, &measured));
    }
    if let Some(md) = option(args, "--md") {
        let page = report::Page {
            machine: &option(args, "--machine").map(read).unwrap_or_default(),
            run: &option(args, "--run").map(read).unwrap_or_default(),
            micro: &option(args, "--micro").map(read).unwrap_or_default(),
            profile: &option(args, "--profile").map(read).unwrap_or_default(),
            svg: option(args, "--svg-link").unwrap_or("BENCHMARKS.svg"),
        };
        write(md, &report::markdown(&results, &page));
    }
    println!("{}", report::bench_line(&results));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => run(&args),
        Some("idle") => idle(&args),
        Some("residence") => residence(&args),
        Some("report") => report(&args),
        _ => usage(),
    }
}
