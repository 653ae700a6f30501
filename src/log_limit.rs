//! When a counted warning is logged: the 1st, the 10th, the 100th... occurrence, so that a
//! problem shows at once, its count keeps growing in the log, and a flood of it (an
//! overflowing socket, a stream of late packets) never floods the log.
//!
//! Owns only that rule. The daemon's processes and the intercept backends all count their
//! troubles and ask it; it knows nothing of what they count or where the line goes.

/// 1, 10, 100, ...: whether the `n`th occurrence of a counted warning is logged.
pub fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Whether a count that grew from `before` to `now` passed 1, 10, 100, ... on the way: the
/// same rule for counts that jump (lost copies come in runs).
pub fn passed_power_of_ten(before: u64, now: u64) -> bool {
    let mut power = 1u64;
    while power <= now {
        if power > before {
            return true;
        }
        match power.checked_mul(10) {
            Some(next) => power = next,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_warnings_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
        assert!(!is_power_of_ten(0));
    }

    #[test]
    fn jumping_counts_are_logged_when_they_pass_a_power_of_ten() {
        assert!(passed_power_of_ten(0, 1));
        assert!(passed_power_of_ten(0, 7), "the first loss, however many");
        assert!(!passed_power_of_ten(7, 9));
        assert!(passed_power_of_ten(9, 10));
        assert!(
            passed_power_of_ten(3, 250),
            "past 10 and 100 at once: one line"
        );
        assert!(!passed_power_of_ten(250, 999));
        assert!(!passed_power_of_ten(5, 5), "no growth, no line");
        assert!(!passed_power_of_ten(u64::MAX - 1, u64::MAX));
        for n in 1..=1000 {
            assert_eq!(passed_power_of_ten(n - 1, n), is_power_of_ten(n), "{n}");
        }
    }
}
