//! PostgreSQL `numeric` as the exact text the database itself prints.
//!
//! sqlx reads a `numeric` into a `BigDecimal` whose scale is rounded up to whole base-10,000
//! digits (`1.50` comes back as `1.5000`) and cannot read `NaN` or the infinities at all. The
//! binary wire form carries the display scale, so this reads it directly: digits in base
//! 10,000, the weight of the first, the sign, and the scale to print (PostgreSQL's
//! `numeric_send`). One-dimensional arrays of it are read here too.

/// The text of one binary `numeric`, or `None` when the bytes are not one.
pub fn text(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(2 * i)?, *b.get(2 * i + 1)?]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d > 9999 {
            return None;
        }
        digits.push(d);
    }
    // The base-10,000 digit of weight `w` (the first digit has weight `weight`).
    let at = |w: i64| -> u16 {
        let i = weight - w;
        if i < 0 || i >= ndigits as i64 {
            0
        } else {
            digits[i as usize]
        }
    };
    let mut out = String::with_capacity(4 * ndigits + dscale + 2);
    if sign == 0x4000 && !digits.iter().all(|d| *d == 0) {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&at(weight).to_string());
        for w in (0..weight).rev() {
            out.push_str(&format!("{:04}", at(w)));
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::with_capacity(dscale + 4);
        let mut w = -1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", at(w)));
            w -= 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Some(out)
}

/// The elements of a binary one-dimensional array (`None` for a NULL element), or `None`
/// when the bytes are not one.
pub fn array(b: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let int = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let ndim = int(0)?;
    if ndim == 0 {
        return Some(Vec::new());
    }
    if ndim != 1 {
        return None;
    }
    let len = usize::try_from(int(12)?).ok()?;
    let mut at = 20;
    let mut out = Vec::with_capacity(len.min(1 << 16));
    for _ in 0..len {
        let n = int(at)?;
        at += 4;
        if n < 0 {
            out.push(None);
            continue;
        }
        let n = n as usize;
        out.push(Some(b.get(at..at + n)?));
        at += n;
    }
    (at == b.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [digits.len() as u16, weight as u16, sign, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn prints_what_postgres_prints() {
        // 1.50: digits [1, 5000], weight 0, scale 2.
        assert_eq!(text(&enc(0, 0, 2, &[1, 5000])).unwrap(), "1.50");
        // 12345678.9: [1234, 5678, 9000], weight 1, scale 1.
        assert_eq!(
            text(&enc(1, 0, 1, &[1234, 5678, 9000])).unwrap(),
            "12345678.9"
        );
        // -0.000000000000000000001: one digit 1000 at weight -6, scale 21.
        assert_eq!(
            text(&enc(-6, 0x4000, 21, &[1000])).unwrap(),
            "-0.000000000000000000001"
        );
        // 100000000 (1e8): [1], weight 2, scale 0 — trailing zero digits are not sent.
        assert_eq!(text(&enc(2, 0, 0, &[1])).unwrap(), "100000000");
        assert_eq!(text(&enc(0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(text(&enc(0, 0x4000, 0, &[])).unwrap(), "0");
        assert_eq!(text(&enc(0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert_eq!(text(&enc(0, 0xF000, 0, &[])).unwrap(), "-Infinity");
    }

    #[test]
    fn refuses_what_is_not_a_numeric() {
        assert!(text(&[0, 1]).is_none());
        assert!(text(&enc(0, 0x1234, 0, &[1])).is_none());
        assert!(text(&enc(0, 0, 0, &[10000])).is_none());
        let mut long = enc(0, 0, 0, &[1]);
        long.push(0);
        assert!(text(&long).is_none());
    }

    #[test]
    fn reads_one_dimensional_arrays() {
        let one = enc(0, 0, 0, &[7]);
        let mut b = Vec::new();
        for i in [1i32, 1, 1700, 2, 1] {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b.extend_from_slice(&(one.len() as i32).to_be_bytes());
        b.extend_from_slice(&one);
        b.extend_from_slice(&(-1i32).to_be_bytes());
        let items = array(&b).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(text(items[0].unwrap()).unwrap(), "7");
        assert!(items[1].is_none());
        assert_eq!(array(&[0; 12]).unwrap().len(), 0);
        assert!(array(&b[..b.len() - 1]).is_none());
    }
}
