//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `1e3`), compared exactly: a
//! quantity is read as a whole number of nano-units, with checked arithmetic, so a value
//! too large to compare is refused rather than wrapped. Used to hold workspace quotas
//! under the ceiling a platform admin sets (`spec.limits.workspaceQuota`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `q` in nano-units (`1` is 1,000,000,000; `1m` is 1,000,000), or `None` when it is not a
/// quantity or too large to compare (beyond about 10^29 units).
pub fn nanos(q: &str) -> Option<i128> {
    let q = q.trim();
    let (negative, rest) = match q.as_bytes().first()? {
        b'-' => (true, q.get(1..)?),
        b'+' => (false, q.get(1..)?),
        _ => (false, q),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    // Scale: value = digits * 10^exp10 * 2^exp2, with the digits the whole and fraction.
    let mut exp10: i32 = 9i32.checked_sub(i32::try_from(fraction.len()).ok()?)?;
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 = exp10.checked_sub(9)?,
        "u" => exp10 = exp10.checked_sub(6)?,
        "m" => exp10 = exp10.checked_sub(3)?,
        "k" => exp10 = exp10.checked_add(3)?,
        "M" => exp10 = exp10.checked_add(6)?,
        "G" => exp10 = exp10.checked_add(9)?,
        "T" => exp10 = exp10.checked_add(12)?,
        "P" => exp10 = exp10.checked_add(15)?,
        "E" => exp10 = exp10.checked_add(18)?,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        s => {
            let e = s.strip_prefix('e').or_else(|| s.strip_prefix('E'))?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            exp10 = exp10.checked_add(e.parse::<i32>().ok()?)?;
        }
    }
    let mut value: i128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        value = value
            .checked_mul(10)?
            .checked_add(i128::from(d.checked_sub(b'0')?))?;
    }
    value = value.checked_mul(2i128.checked_pow(exp2)?)?;
    if exp10 >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(exp10).ok()?)?)?;
    } else {
        // Below a nano-unit: Kubernetes rounds up to the smallest unit it keeps.
        let divisor = 10i128.checked_pow(exp10.unsigned_abs())?;
        let rounded_down = value.checked_div(divisor)?;
        value = if rounded_down.checked_mul(divisor)? == value {
            rounded_down
        } else {
            rounded_down.checked_add(1)?
        };
    }
    // Beyond 10^38 / 10^9: refused, so every accepted value leaves room to compare.
    if value > 10i128.pow(29).saturating_mul(1_000_000_000) {
        return None;
    }
    Some(if negative {
        value.checked_neg()?
    } else {
        value
    })
}

/// `asked` held under `ceiling`, resource by resource: a value above the ceiling (or one
/// that cannot be compared) becomes the ceiling's, and a resource the ceiling names but
/// `asked` leaves out gets the ceiling's value (absent would mean unlimited). Returns the
/// quota to enforce and the resources that were above the ceiling, as
/// `name asked > ceiling`.
pub fn cap<'a>(
    asked: Option<BTreeMap<String, Quantity>>,
    ceiling: impl IntoIterator<Item = (&'a String, &'a Quantity)>,
) -> (BTreeMap<String, Quantity>, Vec<String>) {
    let mut quota = asked.unwrap_or_default();
    let mut above = Vec::new();
    for (resource, max) in ceiling {
        let Some(limit) = nanos(&max.0) else { continue };
        match quota.get(resource) {
            Some(q) if nanos(&q.0).is_some_and(|v| v <= limit) => {}
            Some(q) => {
                above.push(format!(
                    "{resource} {} > {}",
                    crate::names::printable(&q.0, 64),
                    max.0
                ));
                quota.insert(resource.clone(), max.clone());
            }
            None => {
                quota.insert(resource.clone(), max.clone());
            }
        }
    }
    (quota, above)
}

/// A quantity of `nanos` nano-units, written as Kubernetes would read it back: whole
/// units (`8`), binary multiples for whole numbers of Ki (`1536Mi`, `4Gi`), else milli-
/// (`1500m`) or nano-units (`5n`).
pub fn format(nanos: i128) -> String {
    const UNIT: i128 = 1_000_000_000;
    let whole = |v: i128, d: i128| v.checked_rem(d) == Some(0);
    if whole(nanos, UNIT) {
        let units = nanos.checked_div(UNIT).unwrap_or_default();
        for (suffix, shift) in [
            ("Ei", 60u32),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let size = 1i128.checked_shl(shift).unwrap_or(i128::MAX);
            if units != 0 && whole(units, size) {
                return format!("{}{suffix}", units.checked_div(size).unwrap_or_default());
            }
        }
        return units.to_string();
    }
    if whole(nanos, 1_000_000) {
        return format!("{}m", nanos.checked_div(1_000_000).unwrap_or_default());
    }
    format!("{nanos}n")
}

/// Resource lists added up, resource by resource (what cannot be read, or would
/// overflow, is left out of the sum: it is no number to bill or compare).
pub fn sum<'a>(
    lists: impl IntoIterator<Item = &'a BTreeMap<String, Quantity>>,
) -> BTreeMap<String, i128> {
    let mut total: BTreeMap<String, i128> = BTreeMap::new();
    for list in lists {
        for (resource, q) in list {
            let Some(v) = nanos(&q.0) else { continue };
            let entry = total.entry(resource.clone()).or_insert(0);
            *entry = entry.checked_add(v).unwrap_or(*entry);
        }
    }
    total
}

/// A sum in nano-units as a resource list.
pub fn to_list(sum: &BTreeMap<String, i128>) -> BTreeMap<String, Quantity> {
    sum.iter()
        .map(|(k, v)| (k.clone(), Quantity(format(*v))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_exactly() {
        let unit = 1_000_000_000i128;
        for (q, v) in [
            ("1", unit),
            ("0", 0),
            ("500m", unit / 2),
            ("1.5", unit * 3 / 2),
            ("2k", 2000 * unit),
            ("1Ki", 1024 * unit),
            ("2Gi", 2 * (1 << 30) * unit),
            ("1e3", 1000 * unit),
            ("1E3", 1000 * unit),
            ("1e-3", unit / 1000),
            ("1n", 1),
            ("1.5n", 2),
            ("+4", 4 * unit),
            ("-1", -unit),
            ("8Ei", 8 * (1i128 << 60) * unit),
            ("10", 10 * unit),
        ] {
            assert_eq!(nanos(q), Some(v), "{q}");
        }
        for bad in [
            "",
            "m",
            "1.2.3",
            "1x",
            "Gi",
            "1 Gi",
            "1e",
            "1e1000",
            "--1",
            "1Gix",
            ".",
            "1ee3",
            "99999999999999999999999999999999999999999",
        ] {
            assert_eq!(nanos(bad), None, "{bad:?}");
        }
        assert!(nanos("2Gi") > nanos("2G"));
        assert!(nanos("1001m") > nanos("1"));
    }

    #[test]
    fn a_quota_is_held_under_its_ceiling() {
        let list = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        };
        let ceiling = list(&[("requests.cpu", "8"), ("requests.memory", "16Gi")]);
        let (quota, above) = cap(
            Some(list(&[("requests.cpu", "100"), ("pods", "10000")])),
            &ceiling,
        );
        assert_eq!(
            quota,
            list(&[
                ("requests.cpu", "8"),
                ("requests.memory", "16Gi"),
                ("pods", "10000")
            ]),
            "capped, filled in, the rest kept"
        );
        assert_eq!(above, vec!["requests.cpu 100 > 8".to_string()]);
        let (quota, above) = cap(Some(list(&[("requests.cpu", "7500m")])), &ceiling);
        assert_eq!(quota["requests.cpu"].0, "7500m");
        assert!(above.is_empty());
        let (quota, above) = cap(None, &ceiling);
        assert_eq!(
            quota, ceiling,
            "no quota asked: the ceiling, never unlimited"
        );
        assert!(above.is_empty());
        let (_, above) = cap(Some(list(&[("requests.cpu", "not a quantity")])), &ceiling);
        assert_eq!(above.len(), 1, "what cannot be compared is not allowed");
    }

    /// Any string: a value or `None`, never a panic.
    #[test]
    fn quantities_never_panic() {
        let pieces = [
            "",
            "0",
            "9",
            ".",
            "+",
            "-",
            "e",
            "E",
            "i",
            "Ki",
            "Ei",
            "m",
            "n",
            "99999999999",
            "e-",
            "e+",
            "999",
            "\u{0}",
            "é",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let _ = nanos(&format!("{a}{b}{c}"));
                }
            }
        }
    }

    #[test]
    fn sums_are_written_as_kubernetes_reads_them() {
        for q in [
            "0", "8", "1500m", "1536Mi", "4Gi", "5n", "1Ki", "1000", "250m", "1Ei",
        ] {
            let v = nanos(q).unwrap();
            assert_eq!(nanos(&format(v)), Some(v), "{q} round-trips");
        }
        assert_eq!(format(nanos("1.5Gi").unwrap()), "1536Mi");
        assert_eq!(format(nanos("2").unwrap()), "2");
        assert_eq!(format(nanos("1024").unwrap()), "1Ki");
        assert_eq!(format(nanos("0.5").unwrap()), "500m");
        let list = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        };
        let a = list(&[("requests.cpu", "1500m"), ("pods", "3")]);
        let b = list(&[
            ("requests.cpu", "2"),
            ("requests.memory", "1Gi"),
            ("pods", "x"),
        ]);
        assert_eq!(
            to_list(&sum([&a, &b])),
            list(&[
                ("requests.cpu", "3500m"),
                ("requests.memory", "1Gi"),
                ("pods", "3")
            ])
        );
    }
}
