//! Small statistics for the bench: nearest-rank percentiles, medians, and the residence
//! time of announcing packets in the gateway read from a tcpdump text capture.

use std::collections::HashMap;

/// Nearest-rank percentile `p` (0..=100) of sorted `samples`; 0 when there are none.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// Median of `values` (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Residence times (µs) in the gateway of the server's `229` replies, from the text of
/// `tcpdump -i any -n -tt -S 'tcp src port 21'` run in the gateway's namespace: each reply
/// is seen coming `In` on `ingress` and going `Out` on `egress` with the same addresses and
/// sequence range; the difference of the two kernel timestamps is the time the gateway
/// held it (queue, helper, hole, verdict).
pub fn residence(capture: &str, ingress: &str, egress: &str) -> Vec<u64> {
    let mut seen_in: HashMap<String, f64> = HashMap::new();
    let mut out = Vec::new();
    for line in capture.lines() {
        if !line.contains(": FTP: 229") {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(ts), Some(iface), Some(dir)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        let Some(key_start) = line.find(" IP") else {
            continue;
        };
        let Some(key_end) = line.find(", ack") else {
            continue;
        };
        let key = line[key_start..key_end].to_string();
        if iface == ingress && dir == "In" {
            seen_in.insert(key, ts);
        } else if iface == egress && dir == "Out" {
            if let Some(t0) = seen_in.remove(&key) {
                out.push(((ts - t0) * 1e6).round().max(0.0) as u64);
            }
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn residence_pairs_a_reply_seen_in_and_out() {
        let cap = "\
1.000100 to-server In  IP6 2001:db8:2::21.21 > 2001:db8:1::10.40000: Flags [P.], seq 10:48, ack 5, win 1, length 38: FTP: 229 Entering Extended Passive Mode (|||50001|)
1.000050 to-server In  IP6 2001:db8:2::21.21 > 2001:db8:1::10.40000: Flags [P.], seq 1:10, ack 5, win 1, length 9: FTP: 200 ok
1.000180 to-client Out IP6 2001:db8:2::21.21 > 2001:db8:1::10.40000: Flags [P.], seq 10:48, ack 5, win 1, length 38: FTP: 229 Entering Extended Passive Mode (|||50001|)
";
        assert_eq!(residence(cap, "to-server", "to-client"), vec![80]);
    }
}
